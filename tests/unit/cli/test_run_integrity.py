"""Run integrity on the command line: refused resumes, hostile paths and values, damaged files.

Every case here fails before Ray starts: exit status 2, one paragraph naming the
key or file, no traceback, and the run directory exactly as it was.
"""

import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedray.cli.main import format_summary, main
from fedray.config import ConfigError, to_yaml
from fedray.server.checkpoint import save_checkpoint
from fedray.server.resume import resume_config
from fedray.server.state import ServerState
from tests.conftest import REPO, small_config


def snapshot(directory):
    """Every file under `directory` with its bytes: what 'nothing written' compares."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def run_dir(tmp_path):
    """A 10-client digits run that stopped after round 2: config, metrics, checkpoints."""
    where = tmp_path / "runs" / "test"
    where.mkdir(parents=True)
    (where / "config.yaml").write_text(to_yaml(small_config(tmp_path / "runs")))
    pq.write_table(pa.Table.from_pylist([{"round": 1, "eval_accuracy": 0.5}, {"round": 2, "eval_accuracy": 0.7}]),
                   where / "metrics.parquet")
    for r in (1, 2):
        save_checkpoint(where / "checkpoints", ServerState(r, np.zeros(3, np.float32), None, None, {}), keep=3)
    return where


def fails_cleanly(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    return err


# ---- 1. resume refuses overrides its checkpoint depends on, before writing anything --------
@pytest.mark.parametrize("overrides, keys", [
    (["clients.num_clients=5", "server.clients_per_round=4"],
     ["clients.num_clients (10 -> 5), server.clients_per_round (5 -> 4) cannot change"]),
    (["data.dataset=shakespeare"], ["data.dataset ('digits' -> 'shakespeare')"]),
    (["model.hidden=[32]", "seed=1"], ["model.hidden ([64] -> [32])", "seed (0 -> 1)"]),
    (["server.strategy.name=fedadam"], ["server.strategy.name ('fedavg' -> 'fedadam')"]),
    (["output_dir=/elsewhere"], ["output_dir ("]),
])
def test_resume_refuses_changes_the_checkpoint_depends_on(run_dir, capsys, overrides, keys):
    before = snapshot(run_dir)
    err = fails_cleanly(capsys, ["run", "--resume", str(run_dir), *overrides], *keys)
    assert "cannot change on resume" in err and "may change only server.rounds," in err and "ray.*" in err
    assert snapshot(run_dir) == before


def test_resume_accepts_what_may_change(run_dir):
    cfg = resume_config(run_dir, ["server.rounds=8", "server.eval_every=2", "ray.num_cpus=2",
                                  "clients.placement=actor_per_client", "server.round_timeout_s=30"])
    assert (cfg.server.rounds, cfg.server.eval_every, cfg.ray.num_cpus) == (8, 2, 2)
    with pytest.raises(ConfigError, match=r"train.lr \(0.1 -> 0.2\) cannot change on resume"):
        resume_config(run_dir, ["server.rounds=8", "train.lr=0.2"])


def test_resume_continues_from_the_newest_recorded_config(run_dir):
    (run_dir / "config.resume-1.yaml").write_text(to_yaml(small_config(run_dir.parent, "server.rounds=6")))
    assert resume_config(run_dir).server.rounds == 6  # config.yaml says 3


# ---- 2. resume without a checkpoint is refused unless asked for a fresh start --------------
@pytest.mark.parametrize("damage, expected", [
    ("missing", "no checkpoint in"),
    ("empty", "no checkpoint in"),
    ("corrupt", "only checkpoints that cannot be loaded (checkpoint "),
])
def test_resume_without_a_checkpoint_is_refused(run_dir, capsys, damage, expected):
    checkpoints = run_dir / "checkpoints"
    for path in checkpoints.iterdir():
        if damage == "corrupt":
            path.write_bytes(path.read_bytes()[:20])
        else:
            path.unlink()
    if damage == "missing":
        checkpoints.rmdir()
    before = snapshot(run_dir)
    err = fails_cleanly(capsys, ["run", "--resume", str(run_dir)], expected, "--fresh")
    if damage == "corrupt":  # each file named, with why it does not load
        assert "round_000002.safetensors cannot be loaded: its header runs past the end of the file" in err
        assert "round_000001.safetensors cannot be loaded" in err
    assert snapshot(run_dir) == before  # metrics.parquet kept; corrupt files left where they were


def test_fresh_needs_resume(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    fails_cleanly(capsys, ["run", str(path), "--fresh"], "--fresh goes with --resume")


# ---- 6, 7, 8, 10: clear errors where tracebacks were ----------------------------------------
@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("make, expected", [
    (lambda t: [f"output_dir={t / 'afile'}"], "is a file, not a folder"),
    (lambda t: [f"output_dir={t / 'afile' / 'sub'}"], "is a file, not a folder"),
    (lambda t: ["clients.resources.memory=-5"], "clients.resources.memory must be >= 0 bytes or null, got -5"),
    (lambda t: ["train.lr=inf"], "train.lr must be a finite number, got inf"),
    (lambda t: ["server.strategy.args.server_lr=inf"], "server.strategy: strategy 'fedavg': argument 'server_lr' must be a finite number, got inf"),
])
def test_bad_paths_and_values_exit_2_naming_the_key(tmp_path, capsys, command, make, expected):
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    before = snapshot(tmp_path)
    fails_cleanly(capsys, [command, str(path), *make(tmp_path)], expected)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_dir_exits_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    fails_cleanly(capsys, ["run", str(path), f"output_dir={locked}"], "is not writable")


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("text, expected", [
    ('name: "a\\0b"\n', "name must not contain a NUL byte"),
    ("server:\n  rounds: 3\ndata:\n  alpha: 1.0\nserver:\n  rounds: 4\n",
     "line 5: key 'server' repeats the one on line 1"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", "line 3: key 'lr' repeats the one on line 2"),
    ("", "is empty (no settings)"),
    ("# only a comment\n", "is empty (no settings)"),
])
def test_bad_yaml_files_exit_2_naming_file_and_line(tmp_path, capsys, command, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    fails_cleanly(capsys, [command, str(path), f"output_dir={tmp_path / 'runs'}"], expected, str(path))
    assert not (tmp_path / "runs").exists()


def test_errors_from_overrides_say_they_come_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  alpha: 0\n")
    err = fails_cleanly(capsys, ["validate", str(path), "server.rounds=-1"],
                        f"in {path} and its key=value overrides",
                        "server.rounds must be >= 1, got -1 (set by override server.rounds=-1)")
    assert "data.alpha must be > 0, got 0.0\n" in err  # the file's own problem is not attributed
    path.write_text("{}\n")
    fails_cleanly(capsys, ["validate", str(path), "server.rounds=-1"], f"in key=value overrides of {path}:")


# ---- 11. damaged files named, not Arrow's buffers or pickle's opcodes --------------------------
def test_export_of_a_truncated_checkpoint_names_it(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  peft: {r: 4}\n")
    (run / "checkpoints" / "round_000002.safetensors").write_bytes(b"\x80\x05\x95truncated")
    fails_cleanly(capsys, ["export", str(run), "--out", str(tmp_path / "out")],
                  "round_000002.safetensors cannot be loaded")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def two_runs(tmp_path):
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        pq.write_table(pa.Table.from_pylist([{"round": 1, "eval_accuracy": 0.9, "eval_loss": 0.3, "wall_s": 1.0,
                                              "sim_time_s": 2.0, "bytes_up": 10, "bytes_down": 10}]),
                       run / "metrics.parquet")
        runs.append(run)
    return runs


@pytest.mark.parametrize("command", [["compare"], ["report", "--out", "REPORT"]])
def test_a_corrupt_metrics_file_is_named(tmp_path, two_runs, capsys, command):
    (two_runs[1] / "metrics.parquet").write_bytes(b"PAR1 not really")
    argv = [c.replace("REPORT", str(tmp_path / "report")) for c in command] + [str(r) for r in two_runs]
    err = fails_cleanly(capsys, argv, f"{two_runs[1] / 'metrics.parquet'} is not a readable Parquet file")
    assert "<Buffer>" not in err
    assert not (tmp_path / "report").exists()


def test_report_refuses_an_out_that_is_a_file(tmp_path, two_runs, capsys):
    (tmp_path / "out").write_text("mine")
    fails_cleanly(capsys, ["report", *map(str, two_runs), "--out", str(tmp_path / "out")],
                  "exists and is not a directory")
    assert (tmp_path / "out").read_text() == "mine"


@pytest.mark.parametrize("target", ["nan", "inf", "1.5", "-0.1"])
def test_compare_target_must_be_an_accuracy(two_runs, capsys, target):
    with pytest.raises(SystemExit) as info:
        main(["compare", *map(str, two_runs), "--target", target])
    assert info.value.code == 2
    assert f"must be an accuracy in [0, 1], got '{target}'" in capsys.readouterr().err


def test_a_run_that_failed_before_any_evaluation_says_so():
    line = format_summary({"status": "failed", "rounds_completed": 0, "final_metrics": {}, "wall_s": 30.6,
                           "run_dir": "runs/x"})
    assert line == "fedray: failed 0 round(s) in 30.6 s; no evaluated round; results in runs/x"


def test_the_docs_say_what_may_change_on_resume():
    from fedray.server.resume import RESUMABLE, resumable_keys

    guide = (pathlib.Path(REPO) / "docs" / "guides" / "reliability.md").read_text()
    section = guide[guide.index("**What may change on resume**"):guide.index("**The record**")]
    assert len(resumable_keys()) == len(RESUMABLE)
    missing = [key for key in resumable_keys() if f"`{key}`" not in section]
    assert not missing, f"docs/guides/reliability.md's resume section lacks {missing}"
