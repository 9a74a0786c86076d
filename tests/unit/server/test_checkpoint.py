"""Checkpoints that do not load, files readable by the team, Parquet through Arrow's own files."""

import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.server.checkpoint import (
    CheckpointError, list_checkpoints, load_checkpoint, load_newest, save_checkpoint, set_aside,
)
from fedray.server.rundir import RunDirectory, read_parquet, write_parquet
from fedray.server.state import ServerState
from fedray.server.storage import Location


def state(r):
    return ServerState(r, np.full(1000, r, dtype=np.float32), ("s", r), None, {"k": r}, [{"round": r}])


@pytest.fixture
def checkpoints(tmp_path):
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, state(r), keep=3)
    return tmp_path


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # truncated mid-array
    lambda data: data[:-1],  # the STOP opcode missing
    lambda data: data[:3],
    lambda data: b"",
    lambda data: b"garbage" + data[7:],
    lambda data: pickle.dumps({"not": "a state"}),
], ids=["half", "last-byte", "header", "empty", "bad-opcode", "foreign"])
def test_a_damaged_checkpoint_raises_one_error_type_naming_it(checkpoints, damage):
    path = checkpoints / "round_000003.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match="round_000003.safetensors cannot be loaded"):
        load_checkpoint(path)


def test_load_newest_walks_back_past_corrupt_checkpoints(checkpoints):
    for r in (2, 3):
        path = checkpoints / f"round_{r:06d}.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    skipped = []
    loaded = load_newest(checkpoints, skipped.append)
    assert loaded.state.server_round == 1 and loaded.path.name == "round_000001.safetensors"
    np.testing.assert_array_equal(loaded.state.params, np.full(1000, 1, dtype=np.float32))
    assert [e.path.name for e in skipped] == ["round_000003.safetensors", "round_000002.safetensors"]


def test_a_corrupt_checkpoint_set_aside_is_kept_but_never_listed(checkpoints):
    broken = checkpoints / "round_000003.safetensors"
    broken.write_bytes(b"cut")
    moved = set_aside(Location.parse(broken))
    assert moved.name == "round_000003.safetensors.corrupt" and (checkpoints / moved.name).read_bytes() == b"cut"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["round_000001.safetensors", "round_000002.safetensors"]
    save_checkpoint(checkpoints, state(4), keep=1)  # pruning leaves it alone too
    assert sorted(p.name for p in checkpoints.iterdir()) == ["round_000003.safetensors.corrupt", "round_000004.safetensors"]


def test_nothing_loadable_is_none(tmp_path):
    assert load_newest(tmp_path / "missing") is None
    (tmp_path / "round_000001.safetensors").mkdir()  # a directory by a checkpoint's name is not one
    assert list_checkpoints(tmp_path) == [] and load_newest(tmp_path) is None


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_run_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        run = RunDirectory(tmp_path)
        run.write_summary({"status": "completed"})
        run.write_metrics([{"round": 1}])
        save_checkpoint(run.checkpoints, state(1), keep=1)
    finally:
        os.umask(old)
    written = ("summary.json", "metrics.parquet", "checkpoints/round_000001.safetensors")
    for path in (tmp_path / name for name in written):
        assert path.stat().st_mode & 0o777 == mode, path


def test_parquet_never_goes_through_a_python_file_object(tmp_path, monkeypatch):
    """`pq.read_table(io.BytesIO(...))` leaves Arrow I/O threads holding the Python object after
    it returns; one that outlives the interpreter aborts the process at exit ("terminate called
    without an active exception", after `fedray report`). Only Arrow's own sources are passed."""
    seen = []
    real = pq.read_table

    def spy(source, *args, **kwargs):
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    write_parquet(tmp_path / "m.parquet", [{"round": 1, "eval_accuracy": 0.5}])
    assert read_parquet(tmp_path / "m.parquet").to_pylist() == [{"round": 1, "eval_accuracy": 0.5}]
    assert seen and all(isinstance(s, str) for s in seen)


def test_config_files_are_the_original_then_each_resume_in_order(tmp_path):
    run = RunDirectory(tmp_path)
    run.write_config("a: 0\n")
    first = run.write_resume_config("a: 1\n")
    for n in range(2, 12):
        run.write_resume_config(f"a: {n}\n")
    names = [p.name for p in run.config_files()]
    assert names[:3] == ["config.yaml", "config.resume-1.yaml", "config.resume-2.yaml"]
    assert names[-1] == "config.resume-11.yaml" and first.name == "config.resume-1.yaml"
    assert (tmp_path / "config.yaml").read_text() == "a: 0\n"
