"""`fedray compare`: time-to-accuracy from run directories."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedray.cli.compare import time_to_accuracy
from fedray.cli.main import main


def fake_run(tmp_path, name, selector, accuracy, sim_round_s):
    """A run directory as fedray writes it: metrics.parquet and config.yaml."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    rows = [{"round": r + 1, "eval_accuracy": a, "sim_time_s": sim_round_s * (r + 1), "wall_s": 0.5 * (r + 1)}
            for r, a in enumerate(accuracy)]
    pq.write_table(pa.Table.from_pylist(rows), run_dir / "metrics.parquet")
    (run_dir / "config.yaml").write_text(f"server:\n  mode: sync\n  selection:\n    name: {selector}\n")
    return run_dir


def test_time_to_accuracy_is_the_first_evaluated_round_at_the_target():
    rows = [{"round": 1, "eval_accuracy": 0.5, "sim_time_s": 3.0, "wall_s": 1.0},
            {"round": 2, "eval_accuracy": math.nan, "sim_time_s": 6.0, "wall_s": 2.0},
            {"round": 3, "eval_accuracy": 0.9, "sim_time_s": 9.0, "wall_s": 3.0},
            {"round": 4, "eval_accuracy": 0.95, "sim_time_s": 12.0, "wall_s": 4.0}]
    assert time_to_accuracy(rows, 0.85) == (3, 9.0, 3.0)
    reached, sim_s, _ = time_to_accuracy(rows, 0.99)
    assert reached is None and math.isnan(sim_s)


def test_compare_prints_runs_side_by_side_with_speedup(tmp_path, capsys):
    slow = fake_run(tmp_path, "slow", "random", [0.3, 0.6, 0.86, 0.9], sim_round_s=10.0)
    fast = fake_run(tmp_path, "fast", "oort", [0.4, 0.87, 0.9, 0.92], sim_round_s=4.0)
    never = fake_run(tmp_path, "never", "pareto", [0.2, 0.3], sim_round_s=1.0)
    assert main(["compare", str(slow), str(fast), str(never), "--target", "0.85"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time to accuracy 0.85")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in lines if line.startswith("| ") and not line.startswith("| run")}
    assert rows["slow"][:5] == ["random", "sync", "30.0", "1.00x", "3"]
    assert rows["fast"][:5] == ["oort", "sync", "8.0", "3.75x", "2"]
    assert rows["never"][:5] == ["pareto", "sync", "-", "-x", "not in 2"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "not a directory"),
    (lambda p: p, "no metrics.parquet; not a fedray run directory"),
])
def test_compare_rejects_what_is_not_a_run(tmp_path, capsys, make, message):
    assert main(["compare", str(make(tmp_path))]) == 2
    assert message in capsys.readouterr().err
