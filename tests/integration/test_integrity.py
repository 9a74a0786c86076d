"""Never lose a run: resume past a corrupt checkpoint, a failed write, SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys

import pyarrow.parquet as pq

from fedray.cli.main import main
from fedray.config import load_config, to_yaml
from fedray.launcher import prepare, run
from fedray.server.checkpoint import checkpoint_round, latest_checkpoint
from tests.conftest import REPO, small_config
from tests.helpers import untimed


def metrics(run_dir):
    return pq.read_table(run_dir / "metrics.parquet").to_pylist()


def test_resume_starts_fresh_only_when_asked_and_falls_back_past_a_corrupt_checkpoint(ray_cluster, tmp_path, capsys):
    run_dir = tmp_path / "test"
    run_dir.mkdir()  # a run that died before its first checkpoint
    (run_dir / "config.yaml").write_text(to_yaml(small_config(tmp_path)))
    original = (run_dir / "config.yaml").read_bytes()
    assert main(["run", "--resume", str(run_dir)]) == 2
    assert main(["run", "--resume", str(run_dir), "--fresh"]) == 0
    first = metrics(run_dir)
    assert [r["round"] for r in first] == [1, 2, 3]

    newest = run_dir / "checkpoints" / "round_000003.safetensors"
    newest.write_bytes(newest.read_bytes()[:-200])  # truncated, as by a full disk
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "server.rounds=4"]) == 0
    out = capsys.readouterr().out
    assert "round_000003.safetensors cannot be loaded" in out and "kept as round_000003.safetensors.corrupt" in out
    assert "resuming after round 2" in out
    assert "round_000003.safetensors cannot be loaded" in (run_dir / "log.txt").read_text()
    assert (run_dir / "checkpoints" / "round_000003.safetensors.corrupt").exists()

    # config.yaml is how the run started; the resume's change is recorded beside it
    assert (run_dir / "config.yaml").read_bytes() == original
    assert "changed server.rounds" in (run_dir / "config.resume-1.yaml").read_text()
    assert load_config(run_dir / "config.resume-1.yaml").server.rounds == 4
    again = metrics(run_dir)
    assert [r["round"] for r in again] == [1, 2, 3, 4]
    assert untimed(again[:3]) == untimed(first)  # round 3 re-run from round 2's checkpoint, exactly
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 4


def test_a_write_failure_mid_run_fails_it_and_the_summary_claims_only_checkpointed_rounds(ray_cluster, tmp_path):
    run_dir = tmp_path / "test"
    lines = []

    def block_the_round_3_checkpoint(line):
        lines.append(line)
        if re.match(r"round 2/4 ", line):  # the next round has not started yet
            (run_dir / "checkpoints" / "round_000003.safetensors").mkdir()

    summary = run(prepare(small_config(tmp_path, "server.rounds=4")), console=block_the_round_3_checkpoint)
    reason = "round 3: the server could not write the run's files: [Errno 21] Is a directory"
    assert any(line.startswith(f"fedray: stopping: {reason}") for line in lines), lines
    assert reason in (run_dir / "log.txt").read_text()
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "failed"
    assert summary["rounds_completed"] == 2 and summary["final_metrics"]["round"] == 2
    assert {"wall_s", "run_dir", "placement"} <= summary.keys()


def test_sigterm_stops_after_the_current_round_keeps_checkpoints_and_exits_143(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(to_yaml(small_config(tmp_path, "server.rounds=500")))
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "fedray", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    output = []
    for line in proc.stdout:
        output.append(line)
        if re.match(r"round +2/500 ", line):
            proc.send_signal(signal.SIGTERM)  # to the driver alone, as Kubernetes or `kill` would
            break
    output += proc.stdout.readlines()
    assert proc.wait(timeout=600) == 143, "".join(output)  # a hang guard
    text = "".join(output)
    assert "fedray: terminated (SIGTERM); completed rounds and checkpoints are kept" in text
    assert "Ctrl-C" not in text  # Ray's ray.get turns the handler's exception into a plain KeyboardInterrupt
    resume_hint = re.escape(f"; continue with `fedray run --resume {tmp_path / 'test'}`")
    assert re.search(rf"stopped by SIGTERM after round \d+{resume_hint}", text)
    for abort in ("Traceback", "terminate called", "SIGTERM received", "Aborted"):
        assert abort not in text, text

    run_dir = tmp_path / "test"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 2 <= summary["rounds_completed"] < 500
    assert summary["rounds_completed"] == checkpoint_round(latest_checkpoint(run_dir / "checkpoints"))
    assert summary["final_metrics"]["round"] == summary["rounds_completed"]
    assert {"wall_s", "run_dir", "placement"} <= summary.keys()
