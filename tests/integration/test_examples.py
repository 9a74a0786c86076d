"""The worked examples run as documented."""

import json

import pyarrow.parquet as pq

from fedray.cli.main import main
from tests.conftest import REPO


def test_custom_algorithm_example_runs_from_the_repository_root(ray_cluster, tmp_path, monkeypatch):
    """A user's strategy, client transform and aggregator, all by dotted path, against two
    clients that send reversed 100x updates: the run learns, and the attackers are in it."""
    monkeypatch.chdir(REPO)
    code = main(["run", "examples/custom_algorithm/config.yaml", f"output_dir={tmp_path}",
                 "server.rounds=5", "clients.num_clients=10", "server.clients_per_round=10",
                 "clients.attack.clients=[3,7]"])
    assert code == 0
    run_dir = tmp_path / "custom-algorithm"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_metrics"]["accuracy"] > 0.5  # chance: 0.1
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    assert all(r["clients_succeeded"] == 10 and r["updates_rejected"] == 0 for r in rows)
    losses = [r["eval_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True)  # every round improves despite the attackers
