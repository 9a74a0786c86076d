"""Configuration of a model's ownership and of data that changes over time: the
watermark (`server.watermark`) and the continual-learning data schedule (`data.schedule`).

Both sections are off by default (`name: null`); `fedray.config.schema` composes them
into `RunConfig`. What needs the data or the model to check (a task that selects no
rows, more bits than selected parameters) is checked in `fedray.launcher.prepare`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from typing import Any, Dict, List, Optional


@dataclasses.dataclass
class WatermarkConfig:
    """A watermark the designated owners embed in the federated model while it trains,
    each with its own secret key, so each can later prove its share of the model."""

    name: Optional[str] = None
    """`feature` (FedIPR-style signs of secret projections of selected parameters),
    `backdoor` (secret trigger inputs with owner-chosen outputs), a dotted path to a
    factory returning a `fedray.lifecycle.watermark.Scheme`; null: no watermark."""
    args: Dict[str, Any] = field(default_factory=dict)
    """The scheme's arguments, e.g. `{num_bits: 64, params: '^2\\.', margin: 2.0, weight: 2.0}`
    (`feature`) or `{num_triggers: 16, weight: 5.0}` (`backdoor`)."""
    owners: List[int] = field(default_factory=lambda: [0])
    """Client ids that embed the watermark, each with its own key."""
    keys: Optional[str] = None
    """Folder for the owners' key files (`client_<id>.json`), written when the run
    starts if absent and reused if present. It must lie outside `output_dir`, so a run
    directory (shared, copied, published) never holds the secrets."""

    def errors(self, num_clients: int, output_dir: str) -> list[str]:
        if self.name is None:
            return []
        out = []
        if not self.owners:
            out.append("server.watermark.owners must name at least one client id")
        bad = sorted(c for c in self.owners if not 0 <= c < num_clients)
        if bad:
            out.append(f"server.watermark.owners {bad} are not client ids in [0, {num_clients})")
        if len(set(self.owners)) != len(self.owners):
            out.append(f"server.watermark.owners lists a client twice: {list(self.owners)}")
        if self.keys is None:
            out.append("server.watermark.keys must name a folder for the owners' secret keys "
                       "(outside output_dir)")
        elif "://" in self.keys:
            out.append(f"server.watermark.keys must be a local folder (or one mounted on every node), "
                       f"got {self.keys}")
        elif "://" not in output_dir and _inside(self.keys, output_dir):
            out.append(f"server.watermark.keys={self.keys} lies inside output_dir={output_dir}: keys are "
                       "secrets and must not be written where run directories go")
        return out


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclasses.dataclass
class ScheduleConfig:
    """Data that changes over rounds (continual federated learning): the dataset is cut
    into tasks, and every client's shard follows them, task after task."""

    name: Optional[str] = None
    """`classes` (class-incremental: each task a list of labels), `rotation`
    (domain-incremental: each task an angle in degrees by which square images turn),
    `owners` (each task a list of owner-name prefixes, e.g. Shakespeare plays), or a
    dotted path; null: the data never changes."""
    tasks: List[Any] = field(default_factory=list)
    """One entry per task, in order, as the schedule reads it (e.g. `[[0, 1, 2, 3, 4],
    [5, 6, 7, 8, 9]]` for `classes`, `[0, 45, 90]` for `rotation`)."""
    rounds_per_task: int = 5
    """Rounds each task lasts; after the last task, the last one continues."""
    stagger: int = 0
    """Per-client drift: client c moves to each next task (c x stagger mod
    rounds_per_task) rounds later than the federation; 0: all at once."""

    def errors(self) -> list[str]:
        if self.name is None:
            return []
        out = []
        if not self.tasks:
            out.append("data.schedule.tasks must list at least one task")
        for i, task in enumerate(self.tasks):
            if isinstance(task, (list, tuple)) and not task:
                out.append(f"data.schedule.tasks[{i}] is empty")
        if self.rounds_per_task < 1:
            out.append(f"data.schedule.rounds_per_task must be >= 1, got {self.rounds_per_task}")
        if self.stagger < 0:
            out.append(f"data.schedule.stagger must be >= 0, got {self.stagger}")
        return out
