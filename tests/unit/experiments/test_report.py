"""Reports from two synthetic run directories: the table's numbers and the plot files."""

import json
import math

import pytest

from fedray.experiments.report import differing_keys, load_runs, summary_table, write_report
from fedray.server.rundir import RunDirectory

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(path, lr, accuracies, bytes_up=1_000_000):
    run = RunDirectory(path)
    run.write_config(f"name: {path.name}\nseed: 0\ntrain:\n  lr: {lr}\n  batch_size: 16\n")
    run.write_metrics([
        {"round": r, "eval_accuracy": acc, "eval_loss": 1.0 - (acc if not math.isnan(acc) else 0.5),
         "train_loss": 1.0, "bytes_up": bytes_up, "bytes_down": 2 * bytes_up, "wall_s": 2.0 * r}
        for r, acc in enumerate(accuracies, 1)
    ])
    run.write_summary({"status": "completed"})
    return str(path)


@pytest.fixture
def two_runs(tmp_path):
    return [make_run(tmp_path / "a" / "exp", 0.05, [0.5, float("nan"), 0.7]),
            make_run(tmp_path / "b" / "exp", 0.2, [0.6, 0.8, 0.75], bytes_up=500_000)]


def test_the_table_shows_what_differs_and_the_headline_numbers(two_runs):
    records = load_runs(two_runs)
    assert [r.label for r in records] == ["a/exp", "b/exp"]  # equal names get their parent
    assert differing_keys(records) == ["train.lr"]
    lines = summary_table(records).splitlines()
    assert lines[0] == ("| run | train.lr | rounds | final acc | best acc | final loss | time in rounds (s) | "
                        "MB up/round | MB down/round | status |")
    assert lines[2] == "| a/exp | 0.05 | 3 | 0.7000 | 0.7000 | 0.3000 | 6.0 | 1.000 | 2.000 | completed |"
    assert lines[3] == "| b/exp | 0.2 | 3 | 0.7500 | 0.8000 | 0.2500 | 6.0 | 0.500 | 1.000 | completed |"


def test_write_report_makes_pngs_and_markdown(two_runs, tmp_path):
    result = write_report(load_runs(two_runs), tmp_path / "report")
    names = sorted(f.name for f in result.files)
    assert names == ["accuracy_vs_bytes.png", "accuracy_vs_bytes_up.png", "accuracy_vs_round.png",
                     "accuracy_vs_time.png", "bytes_per_round.png", "loss_vs_round.png", "loss_vs_time.png",
                     "report.md"]
    for f in result.files:
        if f.suffix == ".png":
            assert f.read_bytes().startswith(PNG) and f.stat().st_size > 5000
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert result.table in markdown and "![accuracy_vs_round](accuracy_vs_round.png)" in markdown


def test_not_a_run_directory(tmp_path, two_runs):
    with pytest.raises(ValueError, match="nowhere is not a run directory: no metrics.parquet"):
        load_runs([two_runs[0], str(tmp_path / "nowhere")])


def test_summary_json_is_optional(tmp_path):
    path = make_run(tmp_path / "c", 0.1, [0.5])
    (tmp_path / "c" / "summary.json").unlink()
    assert load_runs([path])[0].summary == {}
    assert json.dumps(load_runs([path])[0].config)  # plain data
