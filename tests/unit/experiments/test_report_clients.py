"""`fedray report` and `fedray compare` on runs with federated evaluation: the per-client
view (CDF plot, mean / worst-10 % / best-10 % table) and compare's spread columns."""

import math

import numpy as np

from fedray.cli.main import main
from fedray.experiments.report import load_runs, write_report
from fedray.server.federated_eval import summarize_models
from fedray.server.rundir import RunDirectory

PNG = b"\x89PNG\r\n\x1a\n"
ACCURACY = [0.1, 0.9, 0.5, 0.7, 0.3, 0.6, 0.4, 0.8, 0.2, 1.0, 0.55]
"""The last round's global accuracies of 11 clients (the 10 % tails are 2 clients)."""


def make_run(path, personal=False):
    """A clients-only run directory as fedray writes it: two evaluated rounds."""
    run = RunDirectory(path)
    run.write_config(f"name: {path.name}\nserver:\n  evaluation:\n    where: clients\n    threshold: 0.35\n")
    rows = [{"round": r, "client_id": c, "model": model, "examples": c + 1, "loss": 1.0,
             "accuracy": acc / r if model == "global" else min(1.0, acc + 0.05), "perplexity": math.nan}
            for r in (2, 1) for c, acc in enumerate(ACCURACY) for model in (("global", "personal") if personal
                                                                             else ("global",))]
    run.write_evaluation(rows)
    metrics = [{"round": r, "eval_accuracy": math.nan, "eval_loss": math.nan, "bytes_up": 1, "bytes_down": 1,
                "wall_s": 1.0, "sim_time_s": 2.0 * r, "fed_clients": 11.0,
                **summarize_models([e for e in rows if e["round"] == r], 0.35)} for r in (1, 2)]
    run.write_metrics(metrics)
    return str(path)


def test_the_report_shows_each_runs_last_per_client_accuracy_as_a_table_and_a_cdf(tmp_path):
    result = write_report(load_runs([make_run(tmp_path / "fedavg"), make_run(tmp_path / "ditto", True)]),
                          tmp_path / "report")
    last = np.array(ACCURACY) / 2  # round 2's global accuracies
    mean = np.average(last, weights=np.arange(1, 12))
    worst, best = np.sort(last)[:2].mean(), np.sort(last)[-2:].mean()
    assert f"| fedavg | global | 2 | 11 | {mean:.4f} | {worst:.4f} | {best:.4f} | {(last < 0.35).mean():.2f} (< 0.35) |" \
        in result.table
    assert "| ditto | personal | 2 | 11 |" in result.table
    cdf = tmp_path / "report" / "client_accuracy_cdf.png"
    assert cdf in result.files and cdf.read_bytes().startswith(PNG)


def test_compare_adds_the_clients_mean_and_tails(tmp_path, capsys):
    run = make_run(tmp_path / "fedavg")
    assert main(["compare", run, "--target", "0.4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("| clients' acc | worst 10 % | best 10 % |")
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    last = np.array(ACCURACY) / 2
    assert cells[-3:] == [f"{np.average(last, weights=np.arange(1, 12)):.4f}", f"{np.sort(last)[:2].mean():.4f}",
                          f"{np.sort(last)[-2:].mean():.4f}"]
    assert cells[5] == "1"  # no server evaluation: timed on the clients' mean accuracy (round 1's is >= 0.4)
