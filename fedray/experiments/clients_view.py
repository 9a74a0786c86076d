"""`fedray report`'s per-client view: how the model serves each client, worst served included.

For every run with an evaluation.parquet (federated evaluation, `server.evaluation.where:
clients` or `both`), the last evaluated round's per-client accuracies: a CDF plot (one
line per run and model: `global`, and `personal` where personalisation gave clients
one) and a Markdown table of the example-weighted mean, the worst-10 % and best-10 %
client means and the share of clients below the run's threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fedray.server.federated_eval import EVALUATION_FILE, spread
from fedray.server.rundir import read_parquet
from fedray.server.storage import Location


def last_evaluation(where: str) -> dict[str, dict[str, np.ndarray]] | None:
    """Model -> {`accuracy`, `examples`} per client of the run's last evaluated round (None:
    the run has no evaluation.parquet)."""
    path = Location.parse(where) / EVALUATION_FILE
    if not path.exists():
        return None
    rows = read_parquet(path).to_pydict()
    if not rows.get("round"):
        return None
    last = max(rows["round"])
    out: dict[str, dict[str, list]] = {}
    for r, model, acc, n in zip(rows["round"], rows["model"], rows["accuracy"], rows["examples"]):
        if r == last:
            mine = out.setdefault(model, {"accuracy": [], "examples": []})
            mine["accuracy"].append(acc)
            mine["examples"].append(n)
    return {m: {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()} | {"round": np.asarray(last)}
            for m, cols in out.items()}


def clients_section(records: Sequence, out: Path) -> tuple[str, list[Path]]:
    """(Markdown, PNG files) for the runs that evaluated on their clients; ("", []) if none did."""
    found = [(r, e) for r in records if (e := last_evaluation(r.where)) is not None]
    if not found:
        return "", []
    lines = ["## Per-client accuracy (federated evaluation, last evaluated round)", "",
             "| run | model | round | clients | mean | worst 10 % | best 10 % | below threshold |",
             "|---|---|---|---|---|---|---|---|"]
    for record, evaluation in found:
        threshold = float(record.config.get("server.evaluation.threshold", 0.5))
        for model, cols in evaluation.items():
            s = spread(cols["accuracy"], threshold)
            mean = float(np.average(cols["accuracy"], weights=cols["examples"])) if cols["examples"].sum() else np.nan
            lines.append(f"| {record.label} | {model} | {int(cols['round'])} | {len(cols['accuracy'])} | "
                         f"{mean:.4f} | {s['worst10']:.4f} | {s['best10']:.4f} | {s['below']:.2f} (< {threshold:g}) |")
    return "\n".join(lines) + "\n", [_cdf(found, out / "client_accuracy_cdf.png")]


def _cdf(found, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    for record, evaluation in found:
        for model, cols in evaluation.items():
            values = np.sort(cols["accuracy"])
            share = np.arange(1, len(values) + 1) / len(values)
            ax.step(values, share, where="post", linestyle="-" if model == "global" else "--",
                    label=f"{record.label} {model}")
    ax.set(xlabel="client accuracy", ylabel="share of clients at or below", xlim=(0, 1), ylim=(0, 1.02),
           title="per-client accuracy (CDF)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path)
    return path
