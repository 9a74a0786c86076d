"""Simulated devices: each client's compute speed, bandwidth and type, from a trace or a distribution.

A trace is a table (CSV or Parquet), one row per device profile:

| column | required | meaning |
|---|---|---|
| `compute_score` | yes | relative compute speed, higher is faster (e.g. an AI-Benchmark score) |
| `down_kbps`, `up_kbps` | yes | mean download / upload bandwidth, kbit/s |
| `down_sigma_kbps`, `up_sigma_kbps` | no | their standard deviations (0) |
| `client_type` | no | a label used for prices (`default`) |
| `device` | no | a name for clients.parquet |
| `client_id` | no | pin rows to clients: every id 0..num_clients-1 must appear once |

Without `client_id`, each client draws its compute columns from one random row and
its network columns from another, independently, as FLASH pairs phones and network
traces. A client's speed factor (the multiplier of its compute time) is the
trace's median score divided by its score, so the median device is the reference.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedray.config.registry import Registry
from fedray.config.scheduling import ProfilesConfig

BUNDLED = Path(__file__).parent / "traces"
"""The traces shipped with fedray (`flash.csv`, with its licence and README)."""

REQUIRED = ("compute_score", "down_kbps", "up_kbps")
_COMPUTE = ("compute_score", "client_type", "device")
_NETWORK = ("down_kbps", "down_sigma_kbps", "up_kbps", "up_sigma_kbps")


@dataclasses.dataclass(frozen=True)
class Devices:
    """Per-client simulated hardware; arrays indexed by client id."""

    speed_factor: np.ndarray
    """Compute-time multiplier: 1 is the reference device, 2 takes twice as long."""
    down_kbps: np.ndarray
    down_sigma_kbps: np.ndarray
    up_kbps: np.ndarray
    up_sigma_kbps: np.ndarray
    client_type: np.ndarray
    device: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.speed_factor)

    def columns(self) -> dict[str, np.ndarray]:
        """clients.parquet's simulated-hardware columns (the type is in the profiles already)."""
        return {f"sim_{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "client_type"}


DeviceSource = Callable[[ProfilesConfig, int, np.random.Generator], Devices]
DEVICE_SOURCES: Registry[DeviceSource] = Registry("profile source")


def build_devices(cfg: ProfilesConfig, num_clients: int, run_seed: int) -> Devices:
    """The devices of `num_clients` clients; ValueError naming the problem if the trace is bad."""
    seed = run_seed if cfg.seed is None else cfg.seed
    rng = np.random.default_rng([seed, 0xDE71CE])
    if cfg.source is None:
        return homogeneous(num_clients)
    if cfg.source.endswith((".csv", ".parquet")):
        return from_trace(read_trace(cfg.source), num_clients, rng)
    return DEVICE_SOURCES.build(cfg.source, cfg, num_clients, rng)


def homogeneous(num_clients: int) -> Devices:
    """Every client the reference device, with unlimited bandwidth."""
    ones = np.ones(num_clients)
    return Devices(ones, ones * np.inf, ones * 0.0, ones * np.inf, ones * 0.0,
                   np.full(num_clients, "default", dtype=object), np.full(num_clients, "", dtype=object))


@DEVICE_SOURCES.register("flash")
def flash(cfg: ProfilesConfig, num_clients: int, rng: np.random.Generator) -> Devices:
    """The bundled FLASH trace: 307 phones' AI-Benchmark scores, 19 users' network speeds."""
    return from_trace(read_trace(BUNDLED / "flash.csv"), num_clients, rng)


@DEVICE_SOURCES.register("lognormal")
def lognormal(cfg: ProfilesConfig, num_clients: int, rng: np.random.Generator) -> Devices:
    """Speed factors and bandwidths log-normal around the reference (as FedScale's
    `get_completion_time_lognormal` models device speed); a client's bandwidth is fixed."""
    speed = rng.lognormal(0.0, cfg.speed_sigma, num_clients)
    down = cfg.bandwidth_kbps * rng.lognormal(0.0, cfg.bandwidth_sigma, num_clients)
    up = cfg.bandwidth_kbps * rng.lognormal(0.0, cfg.bandwidth_sigma, num_clients)
    zeros = np.zeros(num_clients)
    tiers = np.where(speed > np.exp(cfg.speed_sigma * 0.43), "low",
                     np.where(speed < np.exp(-cfg.speed_sigma * 0.43), "high", "mid"))
    return Devices(speed, down, zeros, up, zeros.copy(), tiers.astype(object),
                   np.full(num_clients, "", dtype=object))


def read_trace(path: str | Path) -> pa.Table:
    """Load and check a trace table; ValueError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file not found: {path}")
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"trace {path} lacks column(s) {missing}; it needs {list(REQUIRED)}")
    if table.num_rows == 0:
        raise ValueError(f"trace {path} has no rows")
    for column in (*REQUIRED, "down_sigma_kbps", "up_sigma_kbps"):
        if column not in table.column_names:
            continue
        values = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
        low = 0 if column.endswith("sigma_kbps") else np.finfo(float).tiny
        if not (np.isfinite(values) & (values >= low)).all():
            sign = ">= 0" if low == 0 else "> 0"
            raise ValueError(f"trace {path}: column {column} must be finite and {sign}")
    return table


def from_trace(table: pa.Table, num_clients: int, rng: np.random.Generator) -> Devices:
    """Assign trace rows to clients (pinned by `client_id`, else two independent draws)."""
    if "client_id" in table.column_names:
        compute_rows = network_rows = _pinned_rows(table, num_clients)
    else:
        compute_rows = rng.integers(0, table.num_rows, num_clients)
        network_rows = rng.integers(0, table.num_rows, num_clients)
    score = _floats(table, "compute_score")
    return Devices(
        speed_factor=np.median(score) / score[compute_rows],
        down_kbps=_floats(table, "down_kbps")[network_rows],
        down_sigma_kbps=_floats(table, "down_sigma_kbps")[network_rows],
        up_kbps=_floats(table, "up_kbps")[network_rows],
        up_sigma_kbps=_floats(table, "up_sigma_kbps")[network_rows],
        client_type=_strings(table, "client_type", "default")[compute_rows],
        device=_strings(table, "device", "")[compute_rows],
    )


def _pinned_rows(table: pa.Table, num_clients: int) -> np.ndarray:
    ids = table["client_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.full(num_clients, -1, dtype=np.int64)
    wanted = ids < num_clients
    rows[ids[wanted & (ids >= 0)]] = np.flatnonzero(wanted & (ids >= 0))
    missing = np.flatnonzero(rows < 0)
    if len(missing) or pc.count_distinct(table["client_id"]).as_py() != table.num_rows:
        raise ValueError(f"trace client_id must list each of the {num_clients} clients once; "
                         f"missing {missing[:10].tolist()}{'...' if len(missing) > 10 else ''}")
    return rows


def _floats(table: pa.Table, column: str) -> np.ndarray:
    if column not in table.column_names:
        return np.zeros(table.num_rows)
    return table[column].to_numpy(zero_copy_only=False).astype(np.float64)


def _strings(table: pa.Table, column: str, default: str) -> np.ndarray:
    if column not in table.column_names:
        return np.full(table.num_rows, default, dtype=object)
    return np.array([default if v is None else str(v) for v in table[column].to_pylist()], dtype=object)
