"""`fedray compare RUN_DIR ...`: time-to-accuracy of finished runs, side by side.

Time-to-accuracy is the simulated time (`sim_time_s` in metrics.parquet) at the
end of the first evaluated round whose accuracy reaches the target: how long
the federation would have taken on the simulated devices. Wall time and rounds
to the target are shown beside it, and with federated evaluation the clients'
last mean accuracy and its worst- and best-served 10 %. A run whose server
evaluated nothing is timed on the clients' mean accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import yaml

from fedray.config.errors import ConfigError
from fedray.server.rundir import read_parquet


@dataclasses.dataclass(frozen=True)
class TimeToAccuracy:
    """How fast one run reached the target accuracy (NaN / None: never)."""

    run: str
    selector: str
    mode: str
    rounds: int
    sim_s: float
    wall_s: float
    round: int | None
    final_accuracy: float
    best_accuracy: float
    clients_mean: float = math.nan
    """Federated evaluation's last example-weighted client accuracy (NaN: none)."""
    clients_worst10: float = math.nan
    """... and the mean accuracy of its worst-served 10 % of clients."""
    clients_best10: float = math.nan


def accuracy_key(rows: Sequence[dict]) -> str:
    """The server's accuracy column, or federated evaluation's where the server evaluated
    nothing (`server.evaluation.where: clients`)."""
    if any(not math.isnan(r.get("eval_accuracy", math.nan)) for r in rows):
        return "eval_accuracy"
    return "fed_global_accuracy" if any("fed_global_accuracy" in r for r in rows) else "eval_accuracy"


def time_to_accuracy(rows: Sequence[dict], target: float) -> tuple[int | None, float, float]:
    """(round, simulated seconds, wall seconds) at the first evaluated round with
    accuracy >= target; (None, nan, nan) if none reached it."""
    key = accuracy_key(rows)
    for row in rows:
        accuracy = row.get(key, math.nan)
        if not math.isnan(accuracy) and accuracy >= target:
            return row["round"], float(row.get("sim_time_s", math.nan)), float(row["wall_s"])
    return None, math.nan, math.nan


def summarize_run(run_dir: str | Path, target: float) -> TimeToAccuracy:
    """Read a run directory's metrics.parquet and config.yaml; ConfigError naming the file
    if it is not a run directory or a file in it cannot be read."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.parquet"
    if not metrics.is_file():
        raise ConfigError([f"{run_dir}: no metrics.parquet; not a fedray run directory"], "command line")
    config_file = run_dir / "config.yaml"
    try:
        rows = read_parquet(metrics).to_pylist()
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    except (ValueError, OSError) as err:
        raise ConfigError([str(err)], "command line") from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{config_file} is not valid YAML: {err}"], "command line") from None
    server = (config or {}).get("server", {})
    reached, sim_s, wall_s = time_to_accuracy(rows, target)
    key = accuracy_key(rows)
    accuracies = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
    clients = [r for r in rows if not math.isnan(r.get("fed_clients", math.nan))]
    return TimeToAccuracy(
        run=run_dir.name,
        selector=server.get("selection", {}).get("name", "?"),
        mode=str(server.get("mode", "sync")),
        rounds=len(rows),
        sim_s=sim_s,
        wall_s=wall_s,
        round=reached,
        final_accuracy=accuracies[-1] if accuracies else math.nan,
        best_accuracy=max(accuracies, default=math.nan),
        **({f"clients_{k}": clients[-1][f"fed_global_accuracy{c}"] for k, c in
            (("mean", ""), ("worst10", "_worst10"), ("best10", "_best10"))} if clients else {}),
    )


def format_table(results: Sequence[TimeToAccuracy], target: float) -> str:
    """A Markdown table; speed-up is relative to the first run."""
    base = results[0].sim_s if results else math.nan
    lines = [
        f"time to accuracy {target:g} (simulated seconds; speed-up vs {results[0].run if results else '-'})",
        "| run | selector | mode | sim s to target | speed-up | round | wall s | final acc | best acc "
        "| clients' acc | worst 10 % | best 10 % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        speedup = base / r.sim_s if r.round is not None and not math.isnan(base) else math.nan
        lines.append(
            f"| {r.run} | {r.selector} | {r.mode} | {_fmt(r.sim_s, '.1f')} | {_fmt(speedup, '.2f')}x | "
            f"{r.round if r.round is not None else f'not in {r.rounds}'} | {_fmt(r.wall_s, '.1f')} | "
            f"{r.final_accuracy:.4f} | {r.best_accuracy:.4f} | {_fmt(r.clients_mean, '.4f')} | "
            f"{_fmt(r.clients_worst10, '.4f')} | {_fmt(r.clients_best10, '.4f')} |"
        )
    return "\n".join(lines)


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)
