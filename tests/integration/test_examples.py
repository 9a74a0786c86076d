"""The worked examples run as documented."""

import json
import os

from fedray.cli.main import main
from tests.conftest import REPO


def test_custom_strategy_example_runs_from_the_repository_root(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["run", "examples/custom_strategy/config.yaml", f"output_dir={tmp_path}",
                 "server.rounds=4"])
    assert code == 0
    summary = json.loads((tmp_path / "custom-strategy" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_metrics"]["accuracy"] > 0.3
    assert os.path.isfile(tmp_path / "custom-strategy" / "metrics.parquet")
