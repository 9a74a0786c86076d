"""Start-up and tear-down: a quiet console, a driver without torch, nothing left behind,
warm client actors reused across a sweep with the same results as separate runs."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from fedray.config import load_config
from fedray.experiments.sweep import plan_sweep, run_local
from fedray.launcher import prepare, run
from tests.conftest import REPO, small_config
from tests.helpers import alive, untimed, wait_for


def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()


def stop_after_round_1(line):
    if line.startswith("round 1/"):
        raise KeyboardInterrupt  # what Ctrl-C raises in the driver, after the round in progress


@pytest.mark.parametrize("outcome, overrides, hook", [
    ("completed", (), None),
    ("failed", ("clients.transforms=[{name: tests.helpers:breaks_in_round_2}]",), None),
    ("interrupted", (), stop_after_round_1),
])
def test_no_actor_or_placement_group_survives_a_run(ray_cluster, tmp_path, outcome, overrides, hook):
    before = alive()
    lines = []

    def console(line):
        lines.append(line)
        if hook:
            hook(line)

    cfg = small_config(tmp_path, "server.rounds=2", *overrides)
    if outcome == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            run(prepare(cfg), console=console)
        summary = {"status": "interrupted"}
    else:
        summary = run(prepare(cfg), console=console)
    assert summary["status"] == outcome
    assert any("client actor(s) for 10 clients" in line for line in lines)  # they were up
    wait_for(lambda: alive() == before, "the run's actors to be dead")


def test_a_sweep_reusing_actors_gives_the_same_metrics_as_separate_runs(ray_cluster, tmp_path):
    """Point 2 runs on the warm actors point 1 left (same processes), loading its own
    config and shards (another alpha: other shards), and matches a run of its own."""
    config = tmp_path / "grid.yaml"
    config.write_text(
        "name: grid\ndata: {partition: dirichlet}\nclients:\n  num_clients: 10\n  placement: pool\n"
        "  pool_size: 2\n  resources: {num_cpus: 1}\nserver:\n  rounds: 2\n  clients_per_round: 5\n"
        "sweep:\n  grid:\n    data.alpha: [0.3, 3.0]\n    train.lr: [0.05]\n"
    )
    before = alive()
    lines = []
    runs = plan_sweep(str(config), [f"output_dir={tmp_path / 'sweep'}"], [])
    swept = run_local(runs, console=lines.append)
    assert [s["status"] for s in swept] == ["completed", "completed"]
    assert any("2 warm" in line for line in lines)
    wait_for(lambda: alive() == before, "the sweep's warm actors to be released")

    second = runs[1]
    alone = run(prepare(load_config(str(config), [f"output_dir={tmp_path / 'alone'}", *second.overrides])),
                console=lambda line: None)
    assert untimed(metrics(swept[1]["run_dir"])) == untimed(metrics(alone["run_dir"]))
    assert untimed(metrics(swept[0]["run_dir"])) != untimed(metrics(swept[1]["run_dir"]))

    def pids(summary):
        return pq.read_table(f"{summary['run_dir']}/clients.parquet").column("pid").to_pylist()

    assert pids(swept[0]) == pids(swept[1]) != pids(alone)  # reused, not restarted


def test_fedray_run_prints_only_its_own_lines_and_the_driver_never_imports_torch(tmp_path):
    """A fresh `fedray run` (its own local Ray): Ray's INFO and WARNING lines go to log.txt,
    the console shows fedray's start-up line, and the driver process finishes the run
    without ever importing torch (only the actors train)."""
    script = ("import sys\nfrom fedray.cli.main import main\n"
              "status = main(sys.argv[1:])\n"
              "print('driver imported torch:', 'torch' in sys.modules)\nsys.exit(status)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "PYTHONBREAKPOINT"):
        env.pop(name, None)  # as a user's shell has them (this process's Ray set some)
    out = subprocess.run(
        [sys.executable, "-c", script, "run", f"{REPO}/configs/quickstart.yaml", f"output_dir={tmp_path}",
         "server.rounds=2", "clients.num_clients=4", "server.clients_per_round=4", "server.min_clients=2",
         "ray.num_cpus=2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    console = out.stdout + out.stderr
    assert "driver imported torch: False" in out.stdout
    assert "start-up" in console and "4 client actor(s) for 4 clients" in console
    log = (tmp_path / "quickstart" / "log.txt").read_text()
    for ray_line in ("Started a local Ray instance", "Token authentication"):
        assert ray_line not in console
        assert ray_line in log, log
