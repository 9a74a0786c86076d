"""Privacy features on a real local Ray: DP-FedAvg with its accountant and budget,
SecAgg+ with a client that drops out, DP-SGD clients that report epsilon."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.config import load_config
from fedray.launcher import prepare, run
from fedray.privacy import build_mechanism
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import REPO
from tests.helpers import kept_states, untimed

SMALL = ["clients.num_clients=10", "clients.pool_size=2", "server.clients_per_round=4",
         "train.local_epochs=1", "server.eval_every=1", "server.checkpoint_every=1"]


def run_config(name, tmp_path, *overrides, lines=None):
    cfg = load_config(Path(REPO, "configs", name), [f"output_dir={tmp_path}", *SMALL, *overrides])
    summary = run(prepare(cfg), console=(lines.append if lines is not None else lambda line: None))
    rows = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()
    return cfg, summary, rows


def test_dp_fedavg_reports_epsilon_and_stops_when_the_budget_is_spent(ray_cluster, tmp_path):
    """configs/dp_fedavg.yaml, small: epsilon grows each round as the accountant says, and
    a target epsilon that allows 2 of 3 rounds ends the run cleanly after round 2."""
    plain = build_mechanism(load_config(Path(REPO, "configs", "dp_fedavg.yaml"), [*SMALL, "server.rounds=3"]))
    target = (plain.epsilon(2) + plain.epsilon(3)) / 2
    lines = []
    cfg, summary, rows = run_config("dp_fedavg.yaml", tmp_path, "server.rounds=3",
                                    f"server.privacy.args.target_epsilon={target}", lines=lines)
    mechanism = build_mechanism(cfg)
    assert mechanism.rounds_allowed == 2
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert [r["round"] for r in rows] == [1, 2]
    assert [r["dp_epsilon"] for r in rows] == [mechanism.epsilon(1), mechanism.epsilon(2)]
    assert any("allows 2 of server.rounds=3 rounds" in line for line in lines)
    written = json.loads(Path(summary["run_dir"], "summary.json").read_text())
    assert written["privacy"] == {"epsilon": mechanism.epsilon(2), "delta": 1e-3}
    assert not np.isnan(rows[-1]["eval_accuracy"])  # the budget's last round is evaluated
    assert all(r["clients_succeeded"] == len(r["clients"]) for r in rows)


def test_secagg_round_survives_a_dropout_and_learns(ray_cluster, tmp_path):
    """configs/secagg.yaml, small, with DP-FedAvg on top (noise on the unmasked sum);
    client 3 has no data, so it fails after sharing its keys and its masks are
    removed through its neighbours' shares."""
    cfg, summary, rows = run_config(
        "secagg.yaml", tmp_path, "server.rounds=3", "server.clients_per_round=10",
        "data.partition=tests.helpers:iid_with_an_empty_client", "server.min_clients=5",
        "server.privacy={name: fixed_clip, args: {clip_norm: 1.0, noise_multiplier: 0.01}}")
    assert summary["status"] == "completed"
    assert [r["secagg_dropped"] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["secagg_recovered"] for r in rows] == [0.0, 0.0, 0.0]
    assert all(3 not in r["clients"] and len(r["clients"]) == 9 for r in rows)
    accuracy = [r["eval_accuracy"] for r in rows]
    assert accuracy[-1] > accuracy[0] and accuracy[-1] > 0.3, accuracy
    assert rows[0]["dp_epsilon"] > 0
    log = Path(summary["run_dir"], "log.txt").read_text()
    assert "client 3 failed" in log


class Killed(KeyboardInterrupt):
    """The driver stopped as by Ctrl-C: its actors go, their memory with them."""


def dp_sgd_config(where):
    return load_config(Path(REPO, "configs", "quickstart.yaml"), [
        f"output_dir={where}", "name=test", *SMALL, "clients.placement=pool", "server.rounds=3",
        "server.min_clients=1", "train.dp={noise_multiplier: 1.1, max_grad_norm: 1.0, delta: 1e-5}",
        "train.momentum=0.0"])


def test_dp_sgd_clients_report_epsilon_and_a_killed_run_resumes_to_the_same_spend(ray_cluster, tmp_path):
    """Each DP-SGD client's accountant is in its store (none on the server) and its epsilon
    in clients.parquet; a run stopped after round 2 and resumed by fresh actors that read
    the stores gives the uninterrupted run's metrics, model and epsilon per client, bit
    for bit."""
    config = dp_sgd_config
    reference = run(prepare(config(tmp_path / "ref")), console=lambda line: None)
    assert reference["status"] == "completed"
    clients = pq.read_table(f"{reference['run_dir']}/clients.parquet").to_pydict()
    eps = np.array(clients["dp_epsilon"], dtype=float)
    aggregated, selected = np.array(clients["times_aggregated"]), np.array(clients["times_selected"])
    assert (aggregated > 0).sum() >= 4
    assert np.isfinite(eps[aggregated > 0]).all() and (eps[aggregated > 0] > 0).all()
    assert np.isnan(eps[selected == 0]).all()
    rows = pq.read_table(f"{reference['run_dir']}/metrics.parquet").to_pylist()
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    mine = kept_states(reference["run_dir"], config(tmp_path / "ref"))  # each accountant, in its actor's store
    assert {cid: kept.privacy.epsilon for cid, kept in mine.items()} == {
        cid: eps[cid] for cid in np.flatnonzero(selected) if np.isfinite(eps[cid])}
    checkpoint = latest_checkpoint(f"{reference['run_dir']}/checkpoints")
    assert b"dpsgd:Account" not in open(checkpoint, "rb").read()  # no accountant on the server

    def stop_after_round_2(line):
        if line.startswith("round 2/3"):
            raise Killed()

    cfg = config(tmp_path / "killed")
    with pytest.raises(Killed):
        run(prepare(cfg), console=stop_after_round_2)
    run_dir = tmp_path / "killed" / "test"
    assert str(latest_checkpoint(run_dir / "checkpoints")).endswith("round_000002.safetensors")
    resumed = run(prepare(cfg), console=lambda line: None, resume=str(run_dir))
    assert resumed["status"] == "completed" and resumed["rounds_completed"] == 3
    ours, theirs = (load_checkpoint(latest_checkpoint(f"{d}/checkpoints")) for d in (run_dir, reference["run_dir"]))
    np.testing.assert_array_equal(ours.params, theirs.params)
    assert ours.client_refs == theirs.client_refs != {}  # same rounds, digests and epsilon per client
    assert untimed(pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()) == \
        untimed(pq.read_table(f"{reference['run_dir']}/metrics.parquet").to_pylist())
    spent = {cid: kept.privacy.epsilon for cid, kept in kept_states(run_dir, cfg).items()}
    assert spent == {cid: kept.privacy.epsilon for cid, kept in
                     kept_states(reference["run_dir"], config(tmp_path / "ref")).items()}
    assert len(spent) >= 4 and all(e > 0 for e in spent.values())
    epsilon = [pq.read_table(f"{d}/clients.parquet").column("dp_epsilon").to_pylist()
               for d in (run_dir, reference["run_dir"])]
    np.testing.assert_array_equal(*epsilon)
