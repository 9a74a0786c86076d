"""Compare runs: PNG plots and a Markdown table from their run directories.

Reads metrics.parquet (required), summary.json and config.yaml (optional) of
each run directory, local or on a `pyarrow.fs` URI. The table has a column for
every config key whose value differs between the runs, so a sweep's report
shows what was varied. Plots use matplotlib's object API (no global state, no
display needed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from fedray.config.load import override_value
from fedray.experiments.clients_view import clients_section
from fedray.experiments.contributions import contribution_section
from fedray.experiments.task_matrix import task_matrix_plots
from fedray.server.rundir import RunDirectory, read_parquet
from fedray.server.storage import Location

_MB = 1e6


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a report needs from one run directory."""

    label: str
    where: str
    metrics: dict[str, list]
    """Column name -> values, one per round."""
    summary: dict
    config: dict[str, Any]
    """config.yaml flattened to dotted keys."""


@dataclasses.dataclass(frozen=True)
class ReportResult:
    """What `write_report` wrote."""

    table: str
    """The Markdown table (also in report.md)."""
    files: list[Path]


def load_run(where: str) -> RunRecord:
    """One run directory (path or URI); ValueError if it holds no metrics.parquet."""
    location = Location.parse(where)
    metrics_file = location / "metrics.parquet"
    if not metrics_file.exists():
        raise ValueError(f"{where} is not a run directory: no metrics.parquet")
    configs = RunDirectory(location).config_files()  # a resume's changes are in the newest
    summary_file, config_file = location / "summary.json", (configs[-1] if configs else location / "config.yaml")
    try:
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    except ValueError as err:
        raise ValueError(f"{summary_file} is not valid JSON: {err}") from None
    try:
        config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    except yaml.YAMLError as err:
        raise ValueError(f"{config_file} is not valid YAML: {err}") from None
    return RunRecord(location.name, str(location), read_parquet(metrics_file).to_pydict(), summary,
                     _flatten(config or {}))


def load_runs(run_dirs: Sequence[str]) -> list[RunRecord]:
    """Load every run; all unreadable ones named in one ValueError. Equal names get their parent."""
    records, problems = [], []
    for where in run_dirs:
        try:
            records.append(load_run(where))
        except (ValueError, OSError) as err:
            problems.append(str(err))
    if problems:
        raise ValueError("cannot report on: " + "; ".join(problems))
    labels = [r.label for r in records]
    return [
        dataclasses.replace(r, label=_parent_label(r.where)) if labels.count(r.label) > 1 else r
        for r in records
    ]


def differing_keys(records: Sequence[RunRecord]) -> list[str]:
    """Config keys whose values are not the same in every run (the run name aside)."""
    keys = sorted({k for r in records for k in r.config} - {"name", "output_dir"})
    return [k for k in keys if len({repr(r.config.get(k)) for r in records}) > 1]


def summary_table(records: Sequence[RunRecord]) -> str:
    """Markdown: one row per run with the varied config keys and the headline numbers."""
    varied = differing_keys(records)
    header = ["run", *varied, "rounds", "final acc", "best acc", "final loss", "time in rounds (s)",
              "MB up/round", "MB down/round", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in records:
        acc, loss = _finite(r.metrics.get("eval_accuracy", [])), _finite(r.metrics.get("eval_loss", []))
        rounds = r.metrics.get("round", [])
        cells = [
            r.label,
            *(override_value(r.config.get(k)) for k in varied),
            str(len(rounds)),
            _num(acc[-1] if acc else math.nan),
            _num(max(acc) if acc else math.nan),
            _num(loss[-1] if loss else math.nan),
            _num(r.metrics["wall_s"][-1] if r.metrics.get("wall_s") else math.nan, 1),
            _num(_mean(r.metrics.get("bytes_up", [])) / _MB, 3),
            _num(_mean(r.metrics.get("bytes_down", [])) / _MB, 3),
            str(r.summary.get("status", "?")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(records: Sequence[RunRecord], out_dir: str | os.PathLike) -> ReportResult:
    """Write the plots and report.md into `out_dir`; returns the table and the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    time_key, time_label = _time_axis(records)
    files = []
    for metric, title in (("eval_accuracy", "accuracy"), ("eval_loss", "loss")):
        if not any(_finite(r.metrics.get(metric, [])) for r in records):
            continue
        files.append(_line_plot(records, "round", metric, "round", title, out / f"{title}_vs_round.png"))
        files.append(_line_plot(records, time_key, metric, time_label, title, out / f"{title}_vs_time.png"))
    files.append(_bytes_plot(records, out / "bytes_per_round.png"))
    if any(_finite(r.metrics.get("eval_accuracy", [])) for r in records):
        counted = [_cumulative_bytes(r) for r in records]
        for key, what, name in (("mb_up", "cumulative MB sent up", "accuracy_vs_bytes_up"),
                                ("mb_total", "cumulative MB up and down", "accuracy_vs_bytes")):
            files.append(_line_plot(counted, key, "eval_accuracy", what, "accuracy", out / f"{name}.png", log_x=True))
    files += task_matrix_plots(records, out)  # continual runs: accuracy per task after each task
    table = summary_table(records)
    contributions, bars = contribution_section(records, out)  # runs that valued their clients
    table += f"\n{contributions}" if contributions else ""
    files += bars
    per_client, cdf = clients_section(records, out)  # runs that evaluated on their clients
    table += f"\n{per_client}" if per_client else ""
    files += cdf
    images = "\n".join(f"![{f.stem}]({f.name})" for f in files)
    runs = "\n".join(f"- `{r.label}`: {r.where}" for r in records)
    (out / "report.md").write_text(f"# fedray report\n\n{table}\n{images}\n\nRuns:\n{runs}\n", encoding="utf-8")
    return ReportResult(table, [*files, out / "report.md"])


# ---- plots ------------------------------------------------------------------
def _time_axis(records: Sequence[RunRecord]) -> tuple[str, str]:
    """Simulated time when every run has it (device-speed simulation), else wall time."""
    if all("sim_time_s" in r.metrics for r in records):
        return "sim_time_s", "simulated time (s)"
    return "wall_s", "wall time in rounds (s)"


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    return fig, fig.subplots()


def _line_plot(records, x_key: str, y_key: str, x_label: str, y_label: str, path: Path,
               log_x: bool = False) -> Path:
    fig, ax = _figure()
    if log_x:
        ax.set_xscale("log")
    for r in records:
        points = [(x, y) for x, y in zip(r.metrics.get(x_key, []), r.metrics.get(y_key, [])) if _ok(y)]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=r.label)
    ax.set(xlabel=x_label, ylabel=y_label, title=f"{y_label} against {x_label.split(' (')[0]}")
    return _save(fig, ax, path, integer_x=x_key == "round")


def _cumulative_bytes(record: RunRecord) -> RunRecord:
    """The run with columns `mb_up` and `mb_total`: MB sent so far, at the end of each round
    (what compression is judged by: accuracy against bytes on the wire)."""
    up, down, columns = 0.0, 0.0, {"mb_up": [], "mb_total": []}
    for b_up, b_down in zip(record.metrics.get("bytes_up", []), record.metrics.get("bytes_down", [])):
        up, down = up + b_up / _MB, down + b_down / _MB
        columns["mb_up"].append(up)
        columns["mb_total"].append(up + down)
    return dataclasses.replace(record, metrics={**record.metrics, **columns})


def _bytes_plot(records, path: Path) -> Path:
    fig, ax = _figure()
    for r in records:
        line, = ax.plot(r.metrics["round"], [b / _MB for b in r.metrics.get("bytes_up", [])],
                        marker="o", markersize=3, label=f"{r.label} up")
        ax.plot(r.metrics["round"], [b / _MB for b in r.metrics.get("bytes_down", [])],
                linestyle="--", color=line.get_color(), label=f"{r.label} down")
    ax.set(xlabel="round", ylabel="MB per round", title="bytes per round (clients up, server down)")
    ax.set_ylim(bottom=0)
    return _save(fig, ax, path, integer_x=True)


def _save(fig, ax, path: Path, integer_x: bool) -> Path:
    from matplotlib.ticker import MaxNLocator

    if integer_x:  # rounds
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path)
    return path


# ---- small helpers ------------------------------------------------------------
def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parent_label(where: str) -> str:
    parts = where.rstrip("/").split("?")[0].split("/")
    return "/".join(parts[-2:])


def _ok(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _finite(values) -> list[float]:
    return [v for v in values if _ok(v)]


def _mean(values) -> float:
    return sum(values) / len(values) if values else math.nan


def _num(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"
