"""The report's accuracy-against-bytes plots: cumulative MB up, and up plus down, per round."""

import pytest

from fedray.experiments.report import _cumulative_bytes, load_runs
from fedray.server.rundir import RunDirectory


def test_cumulative_bytes_count_every_round(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.write_metrics([{"round": r, "eval_accuracy": 0.1 * r, "bytes_up": 250_000 * r, "bytes_down": 1_000_000}
                       for r in (1, 2, 3)])
    counted = _cumulative_bytes(load_runs([str(tmp_path / "run")])[0])
    assert counted.metrics["mb_up"] == pytest.approx([0.25, 0.75, 1.5])
    assert counted.metrics["mb_total"] == pytest.approx([1.25, 2.75, 4.5])
    assert counted.metrics["eval_accuracy"] == pytest.approx([0.1, 0.2, 0.3])
