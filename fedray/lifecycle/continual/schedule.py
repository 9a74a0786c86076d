"""The data schedule: the dataset cut into tasks that follow each other over rounds.

A schedule is a list of task views, each a function from an Arrow table (a
client's whole shard, or the server's test split) to the rows and features of
that task: the rows of some classes (class-incremental), the images turned by an
angle (domain-incremental), the rows of some owners (new Shakespeare plays per
phase). Every client actor keeps its whole shard and applies the view of its
current task each round, so nothing moves when a task changes; the server
applies every view to its test split to measure each task.

Task t covers rounds t x rounds_per_task + 1 ... (t + 1) x rounds_per_task; after
the last task the last one continues. With `stagger`, client c enters each task
(c x stagger mod rounds_per_task) rounds after the federation does: per-client
drift, where clients change domain at different times.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedray.config.ownership import ScheduleConfig
from fedray.config.registry import Registry
from fedray.data.arrow import features_table, to_numpy
from fedray.types import ClientId

TaskView = Callable[[pa.Table], pa.Table]
"""A task's rows and features of a table."""

SCHEDULES: Registry[Callable[..., Sequence[TaskView]]] = Registry("data schedule")
"""`builder(tasks, owner_names) -> [view per task]`, for `data.schedule.name`."""


@dataclasses.dataclass(frozen=True)
class ClassesView:
    """The rows whose label is one of `labels` (class-incremental learning)."""

    labels: tuple[int, ...]

    def __call__(self, table: pa.Table) -> pa.Table:
        if "y" not in table.column_names:
            raise ValueError("the 'classes' schedule needs a labelled dataset (a 'y' column)")
        return table.filter(pc.is_in(table.column("y"), pa.array(self.labels, pa.int64())))


@dataclasses.dataclass(frozen=True)
class OwnersView:
    """The rows of some owners (e.g. the roles of some plays)."""

    owners: tuple[int, ...]

    def __call__(self, table: pa.Table) -> pa.Table:
        if "owner" not in table.column_names:
            raise ValueError("the 'owners' schedule needs a text dataset (an 'owner' column)")
        return table.filter(pc.is_in(table.column("owner"), pa.array(self.owners, pa.int64())))


@dataclasses.dataclass(frozen=True)
class RotationView:
    """Every square image turned counter-clockwise by `degrees` about its centre
    (bilinear, zeros where the turned image does not reach): domain-incremental."""

    degrees: float

    def __call__(self, table: pa.Table) -> pa.Table:
        if "x" not in table.column_names:
            raise ValueError("the 'rotation' schedule needs image features (an 'x' column)")
        x, y = to_numpy(table)
        if self.degrees % 360 == 0:
            return table
        return features_table(x @ rotation_matrix(x.shape[1], self.degrees).T, y)


def rotation_matrix(num_features: int, degrees: float) -> np.ndarray:
    """M (float32, d x d) with M @ image.ravel() the image turned by `degrees`; d must be
    a square number (side x side pixels)."""
    side = math.isqrt(num_features)
    if side * side != num_features:
        raise ValueError(f"'rotation' needs square images; {num_features} features are not side x side")
    centre = (side - 1) / 2
    rows, cols = np.meshgrid(np.arange(side) - centre, np.arange(side) - centre, indexing="ij")
    theta = -np.deg2rad(degrees)  # rows grow downwards: turn as np.rot90 does for 90
    # the target pixel (row, col) samples the source at the point turned back by theta
    src_row = np.cos(theta) * rows - np.sin(theta) * cols + centre
    src_col = np.sin(theta) * rows + np.cos(theta) * cols + centre
    out = np.zeros((num_features, num_features), dtype=np.float64)
    r0, c0 = np.floor(src_row).astype(int), np.floor(src_col).astype(int)
    target = np.arange(num_features).reshape(side, side)
    for dr in (0, 1):
        for dc in (0, 1):
            r, c = r0 + dr, c0 + dc
            weight = (1 - np.abs(src_row - r)) * (1 - np.abs(src_col - c))
            ok = (r >= 0) & (r < side) & (c >= 0) & (c < side) & (weight > 1e-9)
            np.add.at(out, (target[ok], r[ok] * side + c[ok]), weight[ok])
    return out.astype(np.float32)


def _listed(tasks: Sequence[Any], what: str) -> list[list]:
    out = []
    for i, task in enumerate(tasks):
        if not isinstance(task, (list, tuple)) or not task:
            raise ValueError(f"data.schedule.tasks[{i}] must be a non-empty list of {what}, got {task!r}")
        out.append(list(task))
    return out


@SCHEDULES.register("classes")
def classes(tasks: Sequence[Any], owner_names: Sequence[str] = ()) -> list[TaskView]:
    """Each task a list of class labels, e.g. digits 0-4 then 5-9."""
    views = []
    for i, labels in enumerate(_listed(tasks, "class labels")):
        if not all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
            raise ValueError(f"data.schedule.tasks[{i}] must list integer class labels, got {labels!r}")
        views.append(ClassesView(tuple(labels)))
    return views


@SCHEDULES.register("rotation")
def rotation(tasks: Sequence[Any], owner_names: Sequence[str] = ()) -> list[TaskView]:
    """Each task an angle in degrees; the same rows, turned."""
    for i, angle in enumerate(tasks):
        if isinstance(angle, bool) or not isinstance(angle, (int, float)):
            raise ValueError(f"data.schedule.tasks[{i}] must be an angle in degrees, got {angle!r}")
    return [RotationView(float(angle)) for angle in tasks]


@SCHEDULES.register("owners")
def owners(tasks: Sequence[Any], owner_names: Sequence[str] = ()) -> list[TaskView]:
    """Each task a list of owner-name prefixes: `hamlet` takes every `hamlet/ROLE`."""
    views = []
    for i, prefixes in enumerate(_listed(tasks, "owner-name prefixes")):
        ids = tuple(o for o, name in enumerate(owner_names) if any(name.startswith(str(p)) for p in prefixes))
        if not ids:
            raise ValueError(f"data.schedule.tasks[{i}] = {prefixes} matches no owner of the dataset")
        views.append(OwnersView(ids))
    return views


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A resolved schedule: the task views, and which task is on when."""

    views: tuple[TaskView, ...]
    rounds_per_task: int
    stagger: int = 0

    @property
    def num_tasks(self) -> int:
        return len(self.views)

    def task_of(self, server_round: int, client_id: ClientId | None = None) -> int:
        """The task client `client_id` trains in `server_round` (None: the federation's)."""
        delay = 0 if client_id is None else (client_id * self.stagger) % self.rounds_per_task
        index = (server_round - 1 - delay) // self.rounds_per_task
        return min(self.num_tasks - 1, max(0, index))

    def view(self, table: pa.Table, task: int) -> pa.Table:
        return self.views[task](table)


def build_schedule(cfg: ScheduleConfig, owner_names: Sequence[str] = ()) -> Schedule | None:
    """The schedule of `data.schedule` (None when off); ValueError naming a bad task."""
    if cfg.name is None:
        return None
    views = SCHEDULES.build(cfg.name, list(cfg.tasks), tuple(owner_names))
    if not isinstance(views, (list, tuple)) or not views or not all(callable(v) for v in views):
        raise ValueError(f"data.schedule.name={cfg.name!r} must return one view (a callable) per task")
    return Schedule(tuple(views), cfg.rounds_per_task, cfg.stagger)


def schedule_problems(cfg: ScheduleConfig, train: pa.Table, test: pa.Table,
                      owner_names: Sequence[str] = ()) -> list[str]:
    """Every task must select training rows and test rows (else it cannot be learnt or
    measured); problems name the task's key."""
    try:
        schedule = build_schedule(cfg, owner_names)
    except ValueError as err:
        return [f"data.schedule: {err}"]
    if schedule is None:
        return []
    out = []
    for t in range(schedule.num_tasks):
        try:
            rows = (schedule.view(train, t).num_rows, schedule.view(test, t).num_rows)
        except ValueError as err:
            return [f"data.schedule: {err}"]
        if 0 in rows:
            out.append(f"data.schedule.tasks[{t}] = {cfg.tasks[t]!r} selects {rows[0]} training and "
                       f"{rows[1]} test examples; every task needs both")
    return out
