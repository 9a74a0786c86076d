"""What the server knows of each client: a columnar table keyed by client id.

One numpy array per column, indexed by client id, so recording a result is O(1)
and a selector scores thousands of clients with vectorised arithmetic. The
table is part of the server state (saved in every checkpoint) and is written to
the run directory as clients.parquet.

Columns from wall-clock measurements (`last_wall_s`, `examples_per_s`) vary
from run to run; selectors use only the simulated and statistical columns,
which are reproducible.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import pyarrow as pa

from fedray.types import ClientId, ClientResult


class Outcome(enum.Enum):
    """What became of a selected client's result."""

    aggregated = "aggregated"
    late = "late"
    """Finished, but after the first K or the deadline (dropped, or deferred in async mode)."""
    rejected = "rejected"
    failed = "failed"


_INT = ("num_examples", "times_selected", "times_aggregated", "times_late", "failures",
        "consecutive_failures", "last_round")
_FLOAT = ("expected_duration_s", "expected_compute_s", "last_duration_s", "last_compute_s", "last_transfer_s",
          "last_wall_s", "examples_per_s", "last_bytes_up", "last_bytes_down",
          "last_train_loss", "last_loss_sq")


@dataclasses.dataclass
class ClientProfiles:
    """Per-client measurements; `NaN` (floats) or 0 (counts) where nothing is known yet."""

    num_examples: np.ndarray
    """Examples each client holds (reported when it registers)."""
    client_type: np.ndarray
    """Its device class (reported when it registers): prices for `pareto`."""
    times_selected: np.ndarray
    times_aggregated: np.ndarray
    times_late: np.ndarray
    failures: np.ndarray
    consecutive_failures: np.ndarray
    """Failures since the client's last success: `clients.max_failures` caps it."""
    last_round: np.ndarray
    """The last round the client trained in (0: never)."""
    expected_duration_s: np.ndarray
    """Prior: the simulated duration its device and bandwidth imply."""
    expected_compute_s: np.ndarray
    """Prior: the simulated compute seconds its device implies."""
    last_duration_s: np.ndarray
    """Simulated seconds of its last round (download + compute + upload)."""
    last_compute_s: np.ndarray
    last_transfer_s: np.ndarray
    last_wall_s: np.ndarray
    """Wall seconds its last round took on this machine."""
    examples_per_s: np.ndarray
    """Measured training throughput on this machine (examples trained / wall second)."""
    last_bytes_up: np.ndarray
    last_bytes_down: np.ndarray
    last_train_loss: np.ndarray
    last_loss_sq: np.ndarray
    """Mean squared training loss of its last round (Oort's statistical utility)."""
    peak_memory_mb: np.ndarray | None = None
    """Peak memory (MiB) of the actor that trained it, as of its last round: CUDA
    `max_memory_allocated` on a GPU, the process's peak RSS on CPU. None only in
    checkpoints written before the column existed (filled with NaN)."""

    def __post_init__(self) -> None:
        if self.peak_memory_mb is None:
            self.peak_memory_mb = np.full(len(self.num_examples), np.nan)

    @classmethod
    def create(cls, num_examples: np.ndarray, expected_duration_s: np.ndarray,
               expected_compute_s: np.ndarray | None = None,
               client_type: np.ndarray | None = None) -> "ClientProfiles":
        """Profiles of clients that have registered (example counts, device priors) but never trained."""
        n = len(num_examples)
        columns = {c: np.zeros(n, dtype=np.int64) for c in _INT}
        columns.update({c: np.full(n, np.nan) for c in _FLOAT})
        columns["num_examples"] = np.asarray(num_examples, dtype=np.int64).copy()
        columns["expected_duration_s"] = np.asarray(expected_duration_s, dtype=np.float64).copy()
        if expected_compute_s is not None:
            columns["expected_compute_s"] = np.asarray(expected_compute_s, dtype=np.float64).copy()
        columns["client_type"] = (np.full(n, "default", dtype=object) if client_type is None
                                  else np.asarray(client_type, dtype=object).copy())
        return cls(**columns)

    @property
    def num_clients(self) -> int:
        return len(self.num_examples)

    def record_round(self, result: ClientResult, duration_s: float, compute_s: float,
                     transfer_s: float, bytes_down: int, examples_trained: int) -> None:
        """Fold what one selected client's round measured into its row."""
        cid = result.client_id
        self.times_selected[cid] += 1
        self.last_round[cid] = result.server_round
        self.last_duration_s[cid] = duration_s
        self.last_compute_s[cid] = compute_s
        self.last_transfer_s[cid] = transfer_s
        self.last_wall_s[cid] = result.wall_s
        self.last_bytes_down[cid] = bytes_down
        self.last_bytes_up[cid] = result.num_bytes
        if not result.ok:
            return
        if result.num_examples > 0:
            self.num_examples[cid] = result.num_examples
        if result.wall_s > 0:
            self.examples_per_s[cid] = examples_trained / result.wall_s
        self.last_train_loss[cid] = result.train_loss
        self.last_loss_sq[cid] = result.metrics.get("loss_sq", result.train_loss ** 2)
        self.peak_memory_mb[cid] = result.metrics.get("peak_memory_mb", np.nan)

    def record_outcome(self, client_id: ClientId, outcome: Outcome) -> None:
        """Count what became of the client's result; a failure extends its failure streak."""
        if outcome is Outcome.failed:
            self.failures[client_id] += 1
            self.consecutive_failures[client_id] += 1
            return
        self.consecutive_failures[client_id] = 0
        self.times_aggregated[client_id] += outcome is Outcome.aggregated
        self.times_late[client_id] += outcome is Outcome.late

    # ---- views for selectors ------------------------------------------------
    def duration_estimate(self) -> np.ndarray:
        """Last simulated duration where known, else the prior."""
        return np.where(np.isnan(self.last_duration_s), self.expected_duration_s, self.last_duration_s)

    def compute_estimate(self) -> np.ndarray:
        """Last simulated compute seconds where known, else the prior."""
        return np.where(np.isnan(self.last_compute_s), self.expected_compute_s, self.last_compute_s)

    def statistical_utility(self) -> np.ndarray:
        """Oort's |B_i| x sqrt(mean loss^2) from the last round; NaN if never trained."""
        return self.num_examples * np.sqrt(self.last_loss_sq)

    def eligible(self, max_failures: int | None) -> np.ndarray:
        """Clients not given up on after `max_failures` failures in a row."""
        if max_failures is None:
            return np.ones(self.num_clients, dtype=bool)
        return self.consecutive_failures < max_failures

    # ---- output -------------------------------------------------------------
    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def clients_table(profiles: ClientProfiles, *extra: dict[str, np.ndarray], cache: dict | None = None) -> pa.Table:
    """clients.parquet: one row per client, keyed by `client_id`; `extra` column groups
    (simulated hardware, placement) are joined on the same ids. With a `cache` (a dict
    kept between calls), text columns, which a run never changes in place, are
    converted once: with 100,000 clients that conversion dominates a rewrite."""
    columns: dict[str, np.ndarray] = {"client_id": np.arange(profiles.num_clients, dtype=np.int64)}
    for group in (profiles.columns(), *extra):
        for name, values in group.items():
            assert len(values) == profiles.num_clients and name not in columns, name
            columns[name] = values
    return pa.table({name: _cached(name, values, cache) for name, values in columns.items()})


def _cached(name: str, values: np.ndarray, cache: dict | None) -> pa.Array:
    if cache is None or values.dtype != object:
        return _arrow(values)
    source, converted = cache.get(name, (None, None))
    if source is not values:
        converted = _arrow(values)
        cache[name] = (values, converted)
    return converted


def _arrow(values: np.ndarray) -> pa.Array:
    if values.dtype == object:
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array(values)
