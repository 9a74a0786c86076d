"""The worked examples run as documented."""

import json

import numpy as np
import pyarrow.parquet as pq

from fedray.cli.main import main
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from fedray.server.state_checks import RunShape
from fedray.config import load_config
from tests.conftest import REPO
from tests.helpers import untimed

EXAMPLE = "examples/custom_algorithm/config.yaml"
SMALL = ["server.rounds=5", "clients.num_clients=10", "server.clients_per_round=10", "clients.attack.clients=[3,7]"]


def test_custom_algorithm_example_runs_from_the_repository_root_and_resumes_exactly(
        ray_cluster, tmp_path, monkeypatch, capsys):
    """A user's strategy, client transform, server transform and aggregator, all by dotted
    path, against two clients that send reversed 100x updates: the run learns, and the
    attackers are in it. Stopped after round 3 and resumed (the plug-ins' own state
    classes in its checkpoints), it ends bit-identical to the straight run; resuming
    needs --allow-code, since the run directory names code."""
    monkeypatch.chdir(REPO)
    assert main(["run", EXAMPLE, f"output_dir={tmp_path / 'straight'}", *SMALL]) == 0
    run_dir = tmp_path / "straight" / "custom-algorithm"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_metrics"]["accuracy"] > 0.5  # chance: 0.1
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    assert all(r["clients_succeeded"] == 10 and r["updates_rejected"] == 0 for r in rows)
    losses = [r["eval_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True)  # every round improves despite the attackers

    assert main(["run", EXAMPLE, f"output_dir={tmp_path / 'split'}", *SMALL, "server.rounds=3"]) == 0
    split = tmp_path / "split" / "custom-algorithm"
    capsys.readouterr()
    assert main(["run", "--resume", str(split), "server.rounds=5"]) == 2
    err = capsys.readouterr().err
    assert "server.strategy.name = examples.custom_algorithm.algorithm:clipped_fedavgm" in err
    assert "--allow-code examples.custom_algorithm.algorithm" in err
    assert main(["run", "--resume", str(split), "server.rounds=5",
                 "--allow-code", "examples.custom_algorithm.algorithm"]) == 0
    assert untimed(pq.read_table(split / "metrics.parquet").to_pylist()) == untimed(rows)
    shape = RunShape.of(load_config(run_dir / "config.yaml"))
    a = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"), shape)
    b = load_checkpoint(latest_checkpoint(split / "checkpoints"), shape)
    np.testing.assert_array_equal(a.params, b.params)
    guard = a.transform_state[0]
    assert type(guard).__name__ == "GuardState" and guard == b.transform_state[0] and guard.rounds == 5
