"""Federated evaluation on a real local Ray: a run whose server holds no rows completes
and resumes bit-identically, and evaluating never changes what the clients train."""

import math

import numpy as np
import pyarrow.parquet as pq

from fedray.driver import run_key
from fedray.launcher import prepare, run
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import small_config
from tests.helpers import untimed

CLIENTS = ["data.test_fraction=0", "data.client_test_fraction=0.2", "server.evaluation.where=clients",
           "server.evaluation.fraction=0.6", "data.partition=dirichlet", "train.momentum=0.5",
           "train.persist_optimizer_state=true", "server.rounds=3"]
"""No server split; 6 of 10 clients evaluate each round; kept optimizer state on the clients."""


def table(run_dir, name):
    return pq.read_table(f"{run_dir}/{name}.parquet").to_pylist()


def final_params(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir / "checkpoints")).params


def test_client_evaluation_without_a_server_split_completes_and_resumes_bit_identically(
        ray_cluster, tmp_path, warm_actors):
    import ray

    reference = run(prepare(small_config(tmp_path / "ref", *CLIENTS)), console=lambda line: None, warm=warm_actors)
    assert reference["status"] == "completed" and reference["final_metrics"] == {}
    rows = table(reference["run_dir"], "evaluation")
    assert sorted({(r["round"], r["model"]) for r in rows}) == [(r, "global") for r in (1, 2, 3)]
    assert all(sum(r["round"] == k for r in rows) == 6 for k in (1, 2, 3))
    assert all(r["examples"] > 0 and 0 <= r["accuracy"] <= 1 for r in rows)
    metrics = table(reference["run_dir"], "metrics")
    assert all(math.isnan(m["eval_accuracy"]) and m["fed_clients"] == 6 for m in metrics)
    last = [r for r in rows if r["round"] == 3]
    accuracy = sorted(r["accuracy"] for r in last)
    assert metrics[-1]["fed_global_accuracy_worst10"] == accuracy[0]  # one client is the 10 % of six
    assert metrics[-1]["fed_global_accuracy"] == np.average([r["accuracy"] for r in last],
                                                            weights=[r["examples"] for r in last])
    assert reference["clients_final_metrics"]["global_accuracy"] == metrics[-1]["fed_global_accuracy"]
    assert metrics[-1]["fed_global_accuracy"] > metrics[0]["fed_global_accuracy"]

    lines = []

    def kill_server_after_round_2(line):
        lines.append(line)
        if line.startswith("round 2/3"):
            ray.kill(ray.get_actor(f"fedray/{run_key(tmp_path / 'b' / 'test')}/0/server"))

    resumed = run(prepare(small_config(tmp_path / "b", *CLIENTS)), console=kill_server_after_round_2,
                  warm=warm_actors)
    assert resumed["status"] == "completed"
    assert any("resuming after round 2" in line for line in lines)
    assert untimed(table(resumed["run_dir"], "evaluation")) == untimed(rows)
    assert untimed(table(resumed["run_dir"], "metrics")) == untimed(metrics)
    np.testing.assert_array_equal(final_params(tmp_path / "b" / "test"), final_params(tmp_path / "ref" / "test"))


def test_evaluating_on_the_clients_changes_nothing_they_train(ray_cluster, tmp_path, warm_actors):
    """With DP-SGD (each client's accountant) and secure aggregation: the same training
    metrics, epsilons and model with client evaluation as without."""
    base = ["data.client_test_fraction=0.2", "server.rounds=2", "server.clients_per_round=8",
            "train.dp={noise_multiplier: 1.1, max_grad_norm: 1.0, delta: 1e-5}",
            "server.secure_aggregation={name: secagg_plus, args: {threshold: 3, num_neighbours: 4, "
            "clip_range: 1.0, max_weight: 200}}"]
    both = run(prepare(small_config(tmp_path / "a", *base, "server.evaluation.where=both")),
               console=lambda line: None, warm=warm_actors)
    plain = run(prepare(small_config(tmp_path / "b", *base, "server.evaluation.where=server")),
                console=lambda line: None, warm=warm_actors)
    def trained(run_dir):  # the simulated clock runs on while clients evaluate: all else is equal
        return untimed([{k: v for k, v in r.items() if not k.startswith("fed_") and k != "sim_time_s"}
                        for r in table(run_dir, "metrics")])

    assert trained(both["run_dir"]) == trained(plain["run_dir"])
    epsilon = [table(s["run_dir"], "clients")[c]["dp_epsilon"] for s in (both, plain) for c in (0, 1)]
    assert epsilon[:2] == epsilon[2:] and all(e > 0 for e in epsilon if e == e)
    assert len(table(both["run_dir"], "evaluation")) == 2 * 10
    np.testing.assert_array_equal(final_params(tmp_path / "a" / "test"), final_params(tmp_path / "b" / "test"))
