"""Per-task metrics of a continual run: accuracy on every task, average accuracy, forgetting.

After each evaluated round the server measures the global model on every task's
view of its test split (`task_acc_<t>`, `task_loss_<t>`, all tasks, seen or not, so
the whole task-accuracy matrix is known), and summarises the tasks seen so far:
`avg_acc`, their mean accuracy, and `forgetting`, the mean over past tasks of the
best accuracy they ever had minus their accuracy now (Chaudhry et al. 2018). `task`
is the federation's current task. Each is a column of metrics.parquet.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from fedray.lifecycle.continual.schedule import Schedule


def metric_columns(num_tasks: int) -> tuple[str, ...]:
    per_task = [f"task_{kind}_{t}" for t in range(num_tasks) for kind in ("acc", "loss")]
    return ("task", *per_task, "avg_acc", "forgetting")


class TaskEvaluator:
    """Measures a model on each task's test rows, prepared once on the server's device."""

    def __init__(self, schedule: Schedule, task: Any, test: pa.Table, device, batch_size: int = 1024):
        self.schedule, self.task, self.batch_size = schedule, task, batch_size
        self.data = [task.prepare(schedule.view(test, t), device) for t in range(schedule.num_tasks)]
        self.columns = metric_columns(schedule.num_tasks)

    def evaluate(self, model, server_round: int, history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """This round's columns; `history` are the earlier rounds' metrics rows."""
        current = self.schedule.task_of(server_round)
        out: dict[str, float] = {"task": float(current)}
        for t, data in enumerate(self.data):
            scores = self.task.evaluate(model, data, self.batch_size)
            out[f"task_acc_{t}"] = float(scores.get("accuracy", math.nan))
            out[f"task_loss_{t}"] = float(scores["loss"])
        return {**out, **summarise(out, current, history)}


def summarise(now: Mapping[str, float], current: int, history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`avg_acc` over tasks 0..current and `forgetting` over tasks 0..current-1 (NaN
    during the first task): best earlier accuracy minus accuracy now, averaged."""
    seen = [now[f"task_acc_{t}"] for t in range(current + 1)]
    drops = []
    for t in range(current):
        earlier = [row.get(f"task_acc_{t}", math.nan) for row in history]
        best = max((a for a in earlier if a is not None and not math.isnan(a)), default=math.nan)
        drops.append(best - now[f"task_acc_{t}"])
    return {"avg_acc": float(np.mean(seen)), "forgetting": float(np.mean(drops)) if drops else math.nan}


def task_matrix(rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """R[i, j]: accuracy on task j at the last evaluated round of task i (NaN where a task
    never ended an evaluated round); None for a run without a schedule."""
    names = sorted({k for row in rows for k in row if k.startswith("task_acc_")},
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    if not names or not rows or "task" not in rows[0]:
        return None
    out = np.full((len(names), len(names)), np.nan)
    for row in rows:
        task, accs = row.get("task"), [row.get(n) for n in names]
        if task is None or math.isnan(task) or any(a is None or math.isnan(a) for a in accs):
            continue
        out[int(task)] = accs
    return out
