"""When simulated clients are online, on the simulated clock.

An availability model answers two questions: which clients are online at time
`t` (a boolean mask over client ids), and when the next change happens (so a
server with too few clients online can move its clock forward instead of
spinning). Everything is a function of `t` and a seed, so selection stays
reproducible.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedray.config.registry import Registry
from fedray.config.scheduling import AvailabilityConfig


class Availability(NamedTuple):
    online: Callable[[float], np.ndarray]
    """`online(t)`: bool mask over client ids."""
    next_change: Callable[[float], float]
    """`next_change(t)`: the earliest time > t at which some client comes or goes (inf: never)."""


AvailabilityBuilder = Callable[[AvailabilityConfig, int, np.random.Generator], Availability]
AVAILABILITY: Registry[AvailabilityBuilder] = Registry("availability model")


def build_availability(cfg: AvailabilityConfig, num_clients: int, seed: int) -> Availability:
    """The model named by `clients.availability.model`; ValueError if a trace file is bad."""
    rng = np.random.default_rng([seed, 0xA7A11])
    if cfg.model.endswith((".csv", ".parquet")):
        return from_intervals(cfg.model, num_clients, cfg.period_s)
    return AVAILABILITY.build(cfg.model, cfg, num_clients, rng)


@AVAILABILITY.register("always")
def always(cfg: AvailabilityConfig, num_clients: int, rng: np.random.Generator) -> Availability:
    """Every client is online all the time."""
    mask = np.ones(num_clients, dtype=bool)
    return Availability(lambda t: mask.copy(), lambda t: math.inf)


@AVAILABILITY.register("periodic")
def periodic(cfg: AvailabilityConfig, num_clients: int, rng: np.random.Generator) -> Availability:
    """Client i is online for `online_fraction` of every `period_s`, from its own random
    phase: a diurnal pattern where clients are spread over time zones."""
    phase = rng.random(num_clients)
    period, fraction = cfg.period_s, cfg.online_fraction
    if period <= 0 or fraction >= 1:
        return always(cfg, num_clients, rng)

    def position(t: float) -> np.ndarray:
        return np.mod(t / period + phase, 1.0)

    def next_change(t: float) -> float:
        u = position(t)
        to_edge = np.where(u < fraction, fraction - u, 1.0 - u) * period
        return t + max(float(to_edge.min()), 1e-9 * period)

    return Availability(lambda t: position(t) < fraction, next_change)


def from_intervals(path: str | Path, num_clients: int, period_s: float) -> Availability:
    """Online intervals from a trace (`client_id`, `start_s`, `end_s`, simulated seconds),
    repeating every `period_s` (0: once). Clients the trace never names are always online."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"availability trace not found: {path}")
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    missing = [c for c in ("client_id", "start_s", "end_s") if c not in table.column_names]
    if missing:
        raise ValueError(f"availability trace {path} lacks column(s) {missing}")
    cid = table["client_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    start = table["start_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    end = table["end_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    if ((cid < 0) | (cid >= num_clients)).any() or not (end > start).all():
        raise ValueError(f"availability trace {path}: need 0 <= client_id < {num_clients} "
                         "and end_s > start_s on every row")
    named = np.zeros(num_clients, dtype=bool)
    named[cid] = True
    edges = np.unique(np.concatenate([start, end]))

    def local(t: float) -> float:
        return t % period_s if period_s > 0 else t

    def online(t: float) -> np.ndarray:
        tt = local(t)
        mask = ~named
        inside = (start <= tt) & (tt < end)
        mask[cid[inside]] = True
        return mask

    def next_change(t: float) -> float:
        tt = local(t)
        later = edges[edges > tt]
        if len(later):
            return t + float(later[0] - tt)
        if period_s > 0:
            return t + (period_s - tt) + float(edges[0])
        return math.inf

    return Availability(online, next_change)
