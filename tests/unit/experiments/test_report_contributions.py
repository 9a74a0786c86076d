"""`fedray report` on a run that valued its clients: the payout table and the bar plot."""

from fedray.experiments.report import load_runs, write_report
from fedray.server.rundir import RunDirectory

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(path, contribution=None, budget=0.0):
    run = RunDirectory(path)
    run.write_config(f"name: {path.name}\nserver:\n  contribution:\n    name: gtg_shapley\n    budget: {budget}\n")
    run.write_metrics([{"round": 1, "eval_accuracy": 0.5, "eval_loss": 1.0, "bytes_up": 1, "bytes_down": 1,
                        "wall_s": 1.0}])
    columns = {"client_id": [0, 1, 2]}
    if contribution is not None:
        columns["contribution"] = contribution
    run.write_clients([dict(zip(columns, values)) for values in zip(*columns.values())])
    return str(path)


def test_runs_with_contributions_get_a_payout_table_and_plot(tmp_path):
    valued = make_run(tmp_path / "valued", [0.2, -0.1, 0.6], budget=80.0)
    plain = make_run(tmp_path / "plain")
    result = write_report(load_runs([valued, plain]), tmp_path / "report")
    assert "## Contributions and payouts: valued" in result.table and "plain" not in result.table.split("##")[1]
    assert "| 2 | 0.6000 | 60.00 | 75.0% |" in result.table
    assert "| 1 | -0.1000 | 0.00 | 0.0% |" in result.table
    bars = tmp_path / "report" / "contributions_valued.png"
    assert bars in result.files and bars.read_bytes().startswith(PNG)
    assert "![contributions_valued](contributions_valued.png)" in (tmp_path / "report" / "report.md").read_text()


def test_runs_without_contributions_report_as_before(tmp_path):
    result = write_report(load_runs([make_run(tmp_path / "plain")]), tmp_path / "report")
    assert "Contributions" not in result.table
    assert not any(f.name.startswith("contributions_") for f in result.files)
