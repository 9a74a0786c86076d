"""The task-accuracy matrix of continual runs, drawn for `fedray report`.

Row i is the model at the end of task i, column j its accuracy on task j: the
diagonal is how well each task was learnt, what lies below it how much of the
earlier tasks survived, what lies above it how much a task was known before it
came (`fedray.lifecycle.continual.metrics.task_matrix`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from fedray.lifecycle.continual.metrics import task_matrix


def task_matrix_plots(records: Sequence[Any], out: Path) -> list[Path]:
    """One PNG per run that has per-task metrics (`RunRecord`s of fedray.experiments.report)."""
    files = []
    for record in records:
        columns = record.metrics
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        matrix = task_matrix(rows)
        if matrix is not None:
            files.append(_draw(matrix, record.label, out / f"task_accuracy_{record.label.replace('/', '_')}.png"))
    return files


def _draw(matrix, label: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    size = len(matrix)
    fig = Figure(figsize=(1.2 * size + 2.4, 1.0 * size + 1.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for i in range(size):
        for j in range(size):
            value = matrix[i, j]
            text = "-" if math.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set(xticks=range(size), yticks=range(size), xlabel="accuracy on task", ylabel="after training task",
           title=f"task-accuracy matrix: {label}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path)
    return path
