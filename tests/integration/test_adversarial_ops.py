"""Issue 29, as an adversary and a new user would try it: no hangs, nothing left behind,
one message and exit 2 instead of a traceback, signals that say what happened, and state
files that agree after any failure.

Most cases run in-process (no Ray); a few start `fedray run` in a subprocess because the
exit status, a signal or the processes left behind are what they check. Every wait is
for a state (a line, a file, a process gone) with a bound that only guards against a
hang; nothing asserts a duration.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.cli.main import main
from fedray.config import to_yaml
from fedray.launcher import prepare, run
from fedray.cluster.reaper import ray_descendants
from fedray.server.checkpoint import save_checkpoint
from fedray.server.state import ServerState
from tests.conftest import REPO, small_config
from tests.helpers import wait_for

HANG_GUARD_S = 600
"""Bound on every wait below: a loaded 2-core machine starts Ray and torch workers in
minutes; past this, the code under test hangs."""


def bounded(target, *args):
    """Run `target(*args)` on a thread; its result, or a failure if it hangs."""
    out = []
    thread = threading.Thread(target=lambda: out.append(target(*args)), daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"{target.__name__}{args[:1]} did not finish"
    return out[0]


def fails_with(capsys, argv, *expected):
    """`fedray ARGV` exits 2 with one message holding every `expected`, no traceback."""
    assert bounded(main, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(to_yaml(small_config(tmp_path / "runs")))
    return path


# ---- overrides that are not valid YAML, on run, validate and sweep --grid ----------------
@pytest.mark.parametrize("override", ["name=*x", "name=@home", "data.path=*.txt", "train.lr=[1"])
@pytest.mark.parametrize("command", ["validate", "run", "sweep"])
def test_an_override_that_is_not_yaml_exits_2_naming_the_key(capsys, config_file, command, override):
    key = override.split("=", 1)[0]
    argv = [command, str(config_file), *(["--grid", override] if command == "sweep" else [override])]
    fails_with(capsys, argv, f"the value of {key} is not valid YAML", "quote it")


# ---- YAML that would take hours or the stack ---------------------------------------------
ALIAS_BOMB = "server:\n  foundation_model:\n    deepspeed:\n      a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"      {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdef", "bcdefg"))


def test_a_nested_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400  # 9^7 values from a few hundred bytes
    fails_with(capsys, ["validate", str(path)], str(path), "expands to more than 100,000 values")


@pytest.mark.parametrize("where", ["file", "override"])
def test_a_3000_deep_list_is_refused(tmp_path, capsys, config_file, where):
    deep = "[" * 3000 + "]" * 3000
    if where == "file":
        config_file.write_text(f"name: {deep}\n")
        argv = ["validate", str(config_file)]
    else:
        argv = ["validate", str(config_file), f"name={deep}"]
    fails_with(capsys, argv, "nested deeper than 64 levels")


# ---- values that validate used to pass and the run then tripped on ----------------------
@pytest.mark.parametrize("override, expected", [
    ("output_dir=foo://bar", "output_dir=foo://bar: cannot be used: Unrecognized filesystem type"),
    ("output_dir=s3://fedray-issue-29-no-such-bucket/runs", "output_dir=s3://fedray-issue-29-no-such-bucket/runs"),
    ("seed=18446744073709551617", "seed must be in [0, 2**63), got 18446744073709551617"),
    ("seed=-1", "seed must be in [0, 2**63), got -1"),
])
def test_values_the_run_cannot_use_fail_at_validate(capsys, config_file, override, expected):
    fails_with(capsys, ["validate", str(config_file), override], expected)


@pytest.mark.parametrize("address", ["notaurl:xx", "http://[::1", "ftp://head:8265"])
def test_submit_to_an_address_that_is_not_a_dashboard_exits_2(capsys, config_file, address):
    fails_with(capsys, ["submit", str(config_file), "--address", address, "--skip-local-checks"],
               "not a Ray dashboard address")


# ---- resume: refusals that name the right key and value; nothing to do needs no Ray ------
@pytest.fixture
def finished_run(tmp_path):
    """A run directory that completed its 3 rounds."""
    where = tmp_path / "runs" / "test"
    where.mkdir(parents=True)
    (where / "config.yaml").write_text(to_yaml(small_config(tmp_path / "runs")))
    save_checkpoint(where / "checkpoints", ServerState(3, np.zeros(3, np.float32), None, None, {}), keep=1)
    (where / "summary.json").write_text(json.dumps({"status": "completed", "rounds_completed": 3}))
    return where


@pytest.mark.parametrize("overrides, expected", [
    (["clients.num_clients=5"], "clients.num_clients (10 -> 5) cannot change on resume"),
    (["server.privacy={name: fixed_clip, args: {noise_multiplier: 1.0}}"],
     "server.privacy (None -> {'name': 'fixed_clip', 'args': {'noise_multiplier': 1.0}}) cannot change"),
])
def test_resume_refusals_blame_the_overridden_key_with_its_new_value(capsys, finished_run, overrides, expected):
    err = fails_with(capsys, ["run", "--resume", str(finished_run), *overrides], expected)
    assert "clients_per_round" not in err.split("cannot change")[0]


def test_resuming_a_completed_run_without_new_rounds_starts_nothing(capsys, finished_run):
    before = sorted(p.name for p in finished_run.rglob("*"))
    assert bounded(main, ["run", "--resume", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "already completed its server.rounds=3 rounds; nothing to run" in out
    assert sorted(p.name for p in finished_run.rglob("*")) == before  # no log.txt, no config.resume-1.yaml


def test_show_granules_out_folder_writes_into_it(tmp_path, capsys):
    from tests.unit.cli.test_granules_cli import GRANULAR, idx_folder

    config = tmp_path / "exp.yaml"
    config.write_text(f"output_dir: {tmp_path}\n")
    out = tmp_path / "figures"
    out.mkdir()
    overrides = [*GRANULAR, "data.dataset=idx", f"data.path={idx_folder(tmp_path)}", "clients.num_clients=4",
                 "server.clients_per_round=4"]
    assert main(["show-granules", str(config), *overrides, "--out", str(out)]) == 0
    assert (out / "granules.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "figures.png").exists()


# ---- a checkpoint that cannot be written: summary.json and metrics.parquet agree ---------
def test_after_a_failed_checkpoint_write_metrics_and_summary_agree(ray_cluster, tmp_path):
    cfg = small_config(tmp_path, "server.rounds=3", "server.checkpoint_every=2")
    run_dir = tmp_path / "test"

    def block_checkpoints(line):
        if line.startswith("round 1/3"):  # no checkpoint yet: round 2's write meets a file
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            (run_dir / "checkpoints").write_text("not a folder")

    lines = []
    summary = run(prepare(cfg), console=lambda line: (lines.append(line), block_checkpoints(line)))
    assert summary["status"] == "failed" and summary["rounds_completed"] == 0
    assert any("could not write the run's files" in line for line in lines), lines
    rounds = [r["round"] for r in pq.read_table(run_dir / "metrics.parquet").to_pylist()]
    assert rounds == list(range(1, summary["rounds_completed"] + 1))
    assert json.loads((run_dir / "summary.json").read_text())["rounds_completed"] == 0
    assert "moved here from metrics.parquet" in (run_dir / "log.txt").read_text()


# ---- subprocess runs: exit status, signals, processes ------------------------------------
def fedray_run(tmp_path, *overrides):
    """`fedray run` of a small config in its own process, its output line by line."""
    config = tmp_path / "exp.yaml"
    config.write_text(to_yaml(small_config(tmp_path / "runs", "server.rounds=50", "clients.pool_size=1",
                                           "ray.num_cpus=2", *overrides)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "fedray", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def read_until(proc, prefix):
    """Lines up to the first that starts with `prefix` (a state of the run), then the rest
    keep flowing on a thread so the child never blocks on a full pipe."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True).start()
            return seen
    pytest.fail(f"the run ended before '{prefix}':\n{''.join(seen)}")


def test_a_dead_ray_address_exits_2_naming_it_and_leaves_no_run_dir(tmp_path):
    proc = fedray_run(tmp_path, "ray.address=127.0.0.1:1", "ray.connect_timeout_s=5")
    out, _ = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 2, out
    assert "ray.address=127.0.0.1:1: no Ray answered there within ray.connect_timeout_s=5 s" in out
    assert "Traceback" not in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_sigterm_during_start_up_exits_143_with_a_summary(tmp_path):
    """Once the run directory exists (here: before the actors are up) SIGTERM leaves a
    summary.json; during the rounds, tests/integration/test_integrity.py checks the same."""
    proc = fedray_run(tmp_path)
    seen = read_until(proc, "fedray: run 'test' ->")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=HANG_GUARD_S)
    assert proc.returncode == 143, "".join(seen)
    summary = json.loads((tmp_path / "runs" / "test" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    wait_for(lambda: any("terminated (SIGTERM)" in line for line in seen), "the exit message", 60)
    assert not any("Ctrl-C" in line for line in seen)


def test_sigkill_of_the_driver_leaves_no_ray_process_of_its_own(tmp_path):
    proc = fedray_run(tmp_path)
    read_until(proc, "round  1/50")
    own = ray_descendants(proc.pid)  # this run's Ray: its daemons, agents and workers
    assert any("raylet" in " ".join(_cmdline(pid)) for pid in own), own
    proc.kill()
    proc.wait(timeout=HANG_GUARD_S)
    wait_for(lambda: not _still_running(own), f"the run's Ray processes {_still_running(own)} to end", 120)


def _cmdline(pid):
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def _still_running(known):
    """Those of `known` (pid -> start time) that are still the same, unreaped-or-not, live process."""
    import psutil

    left = []
    for pid, created in known.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                left.append((pid, process.name()))
        except psutil.NoSuchProcess:
            continue
    return left
