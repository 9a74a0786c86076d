"""Reliability: resume, dead client and server actors, bad updates, retries, chaos."""

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from fedray.config import to_yaml
from fedray.launcher import prepare, run, run_key
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.helpers import untimed
from tests.conftest import REPO, small_config



def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()




def final_params(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir / "checkpoints")).params


def run_quiet(cfg, hook=None, resume=None, warm=None):
    def console(line):
        if hook:
            hook(line)
    return run(prepare(cfg), console=console, resume=resume, warm=warm)


RESUME = ["server.rounds=6", "data.partition=dirichlet", "train.optimizer=adam", "train.lr=0.01",
          "train.persist_optimizer_state=true", "server.strategy.name=scaffold",
          "server.transforms=[{name: adam, args: {lr: 0.05}}]"]
"""State everywhere: clients' Adam moments and SCAFFOLD control variates (kept per client
id), the server's control variate and Adam moments (server chain)."""


def test_killed_run_resumes_to_the_uninterrupted_result(ray_cluster, tmp_path, warm_actors):
    reference = run_quiet(small_config(tmp_path / "ref", *RESUME), warm=warm_actors)

    cfg = small_config(tmp_path / "crash", *RESUME)
    config_file = tmp_path / "crash.yaml"
    config_file.write_text(to_yaml(cfg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "fedray", "run", str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    family = []
    for line in proc.stdout:
        family = psutil.Process(proc.pid).children(recursive=True) or family
        if line.startswith("round 3/6"):
            break
    else:
        pytest.fail("the run ended before round 3")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process tree, Ray's daemons included
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)

    run_dir = tmp_path / "crash" / "test"
    assert not (run_dir / "summary.json").exists()
    assert len(metrics(run_dir)) >= 3
    resumed = run_quiet(cfg, resume=str(run_dir), warm=warm_actors)
    assert resumed["status"] == "completed" and resumed["rounds_completed"] == 6
    np.testing.assert_array_equal(final_params(run_dir), final_params(tmp_path / "ref" / "test"))
    assert untimed(metrics(run_dir)) == untimed(metrics(reference["run_dir"]))


def test_dead_server_actor_is_restarted_from_its_checkpoint(ray_cluster, tmp_path, warm_actors):
    import ray

    reference = run_quiet(small_config(tmp_path / "ref", *RESUME), warm=warm_actors)
    lines = []

    def kill_server_after_round_2(line):
        lines.append(line)
        if line.startswith("round 2/6"):
            ray.kill(ray.get_actor(f"fedray/{run_key(tmp_path / 'b' / 'test')}/0/server"))

    summary = run_quiet(small_config(tmp_path / "b", *RESUME), hook=kill_server_after_round_2, warm=warm_actors)
    assert summary["status"] == "completed"
    assert any("the server actor died in round 3" in line for line in lines)
    assert any("resuming after round 2" in line for line in lines)
    np.testing.assert_array_equal(final_params(tmp_path / "b" / "test"),
                                  final_params(tmp_path / "ref" / "test"))
    assert untimed(metrics(summary["run_dir"])) == untimed(metrics(reference["run_dir"]))


def test_client_actor_killed_mid_round_fails_then_rejoins(ray_cluster, tmp_path):
    import ray

    # a 1M-parameter MLP and 20 local epochs: each actor trains for over a second per
    # round, so a kill 0.5 s into round 2 lands while it is busy, even on a loaded machine
    cfg = small_config(tmp_path, "server.rounds=6", "model.hidden=[1024,1024]", "train.local_epochs=20",
                       "train.lr=0.01", "server.min_clients=1", "clients.max_restarts=2")

    name = f"fedray/{run_key(tmp_path / 'test')}/0/client-actor-0"

    def kill_actor_0_during_round_2(line):
        if line.startswith("round 1/6"):
            actor = ray.get_actor(name)
            threading.Timer(0.5, lambda: ray.kill(actor, no_restart=False)).start()
        if line.startswith("round 3/6"):
            # let Ray finish restarting it (it re-imports torch) before the next round
            ray.get(ray.get_actor(name).describe.remote(), timeout=600)

    summary = run_quiet(cfg, hook=kill_actor_0_during_round_2)
    assert summary["status"] == "completed"
    rows = metrics(summary["run_dir"])
    # round 2 records the failures (or, had too few succeeded, a retry on the live actor)
    assert rows[1]["clients_failed"] >= 1 or rows[1]["attempts"] > 1
    assert sum(r["clients_failed"] for r in rows) == rows[1]["clients_failed"]
    log = (tmp_path / "test" / "log.txt").read_text()
    assert "ActorDiedError" in log or "ActorUnavailableError" in log
    # actor 0 hosts the even ids; they are back before the end
    assert any(c % 2 == 0 for r in rows[3:] for c in r["clients"])


def test_bad_updates_are_rejected_and_never_reach_the_model(ray_cluster, tmp_path, warm_actors):
    honest = run_quiet(small_config(tmp_path / "honest", "server.clients_per_round=10"), warm=warm_actors)
    models = {}
    for attack in ["nan", "wrong_shape", "scale"]:
        summary = run_quiet(small_config(tmp_path / attack, "server.clients_per_round=10",
                                         f"clients.attack.name={attack}", "clients.attack.clients=[3]"),
                            warm=warm_actors)
        rows = metrics(summary["run_dir"])
        assert [r["updates_rejected"] for r in rows] == [1, 1, 1], attack
        assert all(3 not in r["clients"] and len(r["clients"]) == 9 for r in rows)
        log = (tmp_path / attack / "test" / "log.txt").read_text()
        assert log.count("client 3 update rejected") == 3
        models[attack] = final_params(tmp_path / attack / "test")
    # However client 3 misbehaves, it is dropped the same way: the same 9-client model,
    # which differs from the honest 10-client one.
    np.testing.assert_array_equal(models["nan"], models["wrong_shape"])
    np.testing.assert_array_equal(models["nan"], models["scale"])
    assert np.isfinite(models["nan"]).all()
    assert not np.array_equal(models["nan"], final_params(pathlib.Path(honest["run_dir"])))


def test_round_is_retried_with_new_clients_when_too_few_succeed(ray_cluster, tmp_path, warm_actors):
    cfg = small_config(tmp_path, "data.partition=tests.helpers:iid_with_an_empty_client",
                       "server.clients_per_round=4", "server.min_clients=4", "server.rounds=6",
                       "server.max_round_retries=10")
    summary = run_quiet(cfg, warm=warm_actors)
    assert summary["status"] == "completed"
    rows = metrics(summary["run_dir"])
    assert all(3 not in r["clients"] and r["clients_succeeded"] == 4 for r in rows)
    assert any(r["attempts"] > 1 for r in rows)  # client 3 was drawn at some point


def test_run_stops_with_its_checkpoint_when_retries_run_out(ray_cluster, tmp_path):
    cfg = small_config(tmp_path, "data.partition=tests.helpers:iid_with_an_empty_client",
                       "clients.num_clients=4", "server.clients_per_round=4", "server.min_clients=4",
                       "server.max_round_retries=1")
    lines = []
    summary = run(prepare(cfg), console=lines.append)
    assert summary["status"] == "failed" and summary["rounds_completed"] == 0
    assert any("round 1 fell short of server.min_clients=4 in 2 attempt(s)" in line for line in lines)
    assert (tmp_path / "test" / "summary.json").exists()


@pytest.mark.slow
def test_chaos_killing_client_actors_in_most_rounds(ray_cluster, tmp_path):
    """20 rounds, ten single-client actors; most rounds a random actor is killed mid-round."""
    import ray

    common = ["clients.num_clients=10", "clients.placement=actor_per_client",
              "clients.resources.num_cpus=0.2", "server.clients_per_round=10",
              "server.rounds=20", "server.min_clients=3", "clients.max_restarts=-1",
              "data.partition=dirichlet", "train.local_epochs=2", "train.momentum=0.5"]
    calm = run_quiet(small_config(tmp_path / "calm", *common))
    rng = np.random.default_rng(0)
    kills = []

    def monkey(line):
        if line.startswith("round ") and rng.random() < 0.8:
            victim = int(rng.integers(10))
            actor = ray.get_actor(f"fedray/{run_key(tmp_path / 'chaos' / 'test')}/0/client-actor-{victim}")
            delay = float(rng.uniform(0.0, 0.05))
            threading.Timer(delay, lambda: ray.kill(actor, no_restart=False)).start()
            kills.append(victim)

    chaos = run_quiet(small_config(tmp_path / "chaos", *common), hook=monkey)
    rows = metrics(chaos["run_dir"])
    assert chaos["status"] == "completed" and len(rows) == 20
    assert len(kills) >= 12
    # a call lost to a restart is sent again once the server's own handle sees the actor
    # back (a second loss is a failure): every kill shows up as one or the other
    log = (tmp_path / "chaos" / "test" / "log.txt").read_text()
    resent = log.count("actor was restarted; its call was sent again")
    assert resent + sum(r["clients_failed"] for r in rows) >= 3, log
    assert chaos["final_metrics"]["accuracy"] >= calm["final_metrics"]["accuracy"] - 0.05
