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
from tests.helpers import kill_when_busy, untimed, wait_for
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


RESUME = ["server.rounds=6", "data.partition=dirichlet", "train.lr=0.05", "train.momentum=0.5",
          "server.strategy.name=scaffold",
          "clients.codec.name=top_k", "clients.codec.args={fraction: 0.1}",
          "server.transforms=[{name: adam, args: {lr: 0.05}}]"]
"""State everywhere: SCAFFOLD's control variates and top-k's error-feedback residuals (kept
per client id), the server's control variate and Adam moments (server chain). (SCAFFOLD
takes plain SGD clients, so clients' optimizer moments are covered in test_run.py.)"""


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

    # actor 0 hosts the even ids: in round 2 the first of them holds (pause_when_marked), and
    # the actor is killed on that state, so the kill always lands mid-round
    gate = tmp_path / "gate"
    gate.mkdir()
    cfg = small_config(tmp_path, "server.rounds=6", "server.min_clients=1", "clients.max_restarts=2",
                       f"clients.transforms=[{{name: 'tests.helpers:pause_when_marked', args: {{folder: '{gate}'}}}}]")

    name = f"fedray/{run_key(tmp_path / 'test')}/0/client-actor-0"
    watchers = []

    def kill_actor_0_during_round_2(line):
        if line.startswith("round 1/6"):
            watchers.append(kill_when_busy(gate, 2, range(0, 10, 2), ray.get_actor(name)))
        if line.startswith("round 3/6"):
            # let Ray finish restarting it (it re-imports torch) before the next round
            wait_for(lambda: answers(ray.get_actor(name)), "client actor 0 to be back", 600)

    summary = run_quiet(cfg, hook=kill_actor_0_during_round_2)
    assert summary["status"] == "completed" and watchers[0].killed
    rows = metrics(summary["run_dir"])
    log = (tmp_path / "test" / "log.txt").read_text()
    resent = log.count("actor was restarted; its call was sent again")
    # round 2's lost calls are failures, a retry on the live actor, or sent again once it is back
    assert rows[1]["clients_failed"] >= 1 or rows[1]["attempts"] > 1 or resent >= 1, log
    assert sum(r["clients_failed"] for r in rows) == rows[1]["clients_failed"]
    assert "ActorDiedError" in log or "ActorUnavailableError" in log or resent >= 1
    # actor 0 hosts the even ids; they are back before the end
    assert any(c % 2 == 0 for r in rows[3:] for c in r["clients"])


def answers(actor) -> bool:
    """Whether `actor` answers a call (False while Ray is still restarting it)."""
    import ray
    from ray.exceptions import ActorUnavailableError

    try:
        ray.get(actor.describe.remote(), timeout=600)
    except ActorUnavailableError:
        return False
    return True


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
    assert any("round 1 fell short of server.min_clients=4 in 2 attempt(s); no checkpoint has been written yet"
               in line for line in lines)
    assert not any("the newest checkpoint" in line for line in lines)  # there is none to be intact
    assert (tmp_path / "test" / "summary.json").exists()


@pytest.mark.slow
def test_chaos_killing_client_actors_in_most_rounds(ray_cluster, tmp_path):
    """10 rounds, ten single-client actors; most rounds a random actor is killed mid-round."""
    import ray

    common = ["clients.num_clients=10", "clients.placement=actor_per_client",
              "clients.resources.num_cpus=0.2", "server.clients_per_round=10",
              "server.rounds=10", "server.min_clients=3", "clients.max_restarts=-1",
              "data.partition=dirichlet", "train.local_epochs=2", "train.momentum=0.5"]
    gate = tmp_path / "gate"
    gate.mkdir()
    common.append(f"clients.transforms=[{{name: 'tests.helpers:pause_when_marked', args: {{folder: '{gate}'}}}}]")
    # the undisturbed reference on a pool of 2 actors: placement does not change a run's
    # result (test_run.py), and 8 fewer actors start
    calm = run_quiet(small_config(tmp_path / "calm", *common, "clients.placement=pool", "clients.pool_size=2"))
    rng = np.random.default_rng(0)
    watchers = []

    def monkey(line):
        if not line.startswith("round "):
            return
        if watchers:
            watchers[-1][1].set()  # the round is over: a client that never ran is not killed now
        next_round = int(line.split()[1].split("/")[0]) + 1
        if rng.random() < 0.8:
            victim = int(rng.integers(10))
            actor = ray.get_actor(f"fedray/{run_key(tmp_path / 'chaos' / 'test')}/0/client-actor-{victim}")
            stop = threading.Event()
            watchers.append((kill_when_busy(gate, next_round, [victim], actor, stop), stop))

    chaos = run_quiet(small_config(tmp_path / "chaos", *common), hook=monkey)
    for _, stop in watchers:
        stop.set()
    kills = sum(thread.killed for thread, _ in watchers)
    rows = metrics(chaos["run_dir"])
    assert chaos["status"] == "completed" and len(rows) == 10
    # 0.8 of rounds 2-10 pick a victim (this seed: six, five distinct actors); one still
    # restarting from an earlier kill (it re-imports torch, seconds) takes no part in the
    # round, so it is not killed again
    assert len(watchers) >= 5 and kills >= 3
    # a call lost to a restart is sent again once the server's own handle sees the actor
    # back (a second loss is a failure): every kill, landing mid-round, shows up as one or the other
    log = (tmp_path / "chaos" / "test" / "log.txt").read_text()
    resent = log.count("actor was restarted; its call was sent again")
    assert resent + sum(r["clients_failed"] for r in rows) >= kills, log
    assert chaos["final_metrics"]["accuracy"] >= calm["final_metrics"]["accuracy"] - 0.05
