from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.server.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from fedray.server.rundir import RunDirectory, atomic_write, unique_run_dir
from fedray.server.state import ServerState
from fedray.types import StateRef


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def explode(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_metrics_parquet_round_trips(tmp_path):
    run = RunDirectory(tmp_path)
    rows = [{"round": 1, "eval_accuracy": 0.5}, {"round": 2, "eval_accuracy": 0.75}]
    run.write_metrics(rows)
    assert pq.read_table(run.metrics_path).to_pylist() == rows


def test_unique_run_dir_never_reuses_a_run(tmp_path):
    first = unique_run_dir(str(tmp_path), "exp")
    assert Path(first) == tmp_path / "exp"
    first.mkdir()
    assert unique_run_dir(str(tmp_path), "exp") == first  # empty: reuse
    (first / "metrics.parquet").write_text("x")
    assert Path(unique_run_dir(str(tmp_path), "exp")) == tmp_path / "exp-2"


def state(r):
    return ServerState(r, np.full(3, r, dtype=np.float32), ("s", r), None, {"k": r}, metrics=[{"round": r}],
                       client_refs={7: StateRef(r, "digest")})


def test_checkpoints_keep_the_newest_and_reload_exactly(tmp_path):
    for r in range(1, 6):
        save_checkpoint(tmp_path, state(r), keep=2)
    kept = list_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["round_000004.safetensors", "round_000005.safetensors"]
    loaded = load_checkpoint(kept[-1])
    assert loaded.server_round == 5 and loaded.transform_state == ("s", 5)
    assert loaded.client_refs == {7: StateRef(5, "digest")}
    np.testing.assert_array_equal(loaded.params, np.full(3, 5, dtype=np.float32))
