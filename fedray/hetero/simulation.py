"""Simulated time: how long a client's round takes on its simulated device, and who is in time.

A client's simulated round duration is

    download_s + compute_s + upload_s
    = bytes_down / bandwidth_down + compute time x speed factor + bytes_up / bandwidth_up

where the compute time is either modeled (examples trained x seconds per
example on the reference device: exact, reproducible) or measured (the client's
wall time on this machine). Bandwidths are drawn per transfer from the client's
N(mean, sigma), redrawing non-positive values, as FLASH does; the draw is seeded
by (seed, round, client, launch), so it is reproducible too. Nothing sleeps:
the server adds durations to its simulated clock.

Decisions that depend on who finishes first (the first K of an over-committed
round, the deadline, FedBuff's buffer) are taken on these computed finish
times, never on the order in which Ray delivers results, so they are
deterministic on CPU for a given seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping

import numpy as np

from fedray.config.scheduling import ComputeTime
from fedray.config.schema import RunConfig
from fedray.hetero.availability import Availability, build_availability
from fedray.hetero.devices import Devices, build_devices
from fedray.types import ClientId, ClientResult

_MAX_REDRAWS = 100
_EVALUATION = 0xE7A1
"""Tells a federated evaluation's bandwidth draws from a fit's (launch numbers are small)."""
FORWARD_SHARE = 1 / 3
"""Modeled compute of evaluating an example, as a share of training on it: a forward
pass is about a third of a forward and backward pass (2N vs 6N FLOPs per token)."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """One client's simulated round, in seconds."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s

    @property
    def transfer_s(self) -> float:
        return self.download_s + self.upload_s


class Simulation:
    """The simulated devices, their availability and the rules of simulated time."""

    def __init__(self, cfg: RunConfig, devices: Devices, availability: Availability,
                 num_examples: np.ndarray, payload_bytes: int):
        self.cfg = cfg
        self.devices = devices
        self.availability = availability
        self.num_examples = np.asarray(num_examples, dtype=np.int64)
        self.payload_bytes = int(payload_bytes)
        """Bytes of the travelling parameters: the transfer size the duration priors assume."""
        self.seed = cfg.seed if cfg.clients.profiles.seed is None else cfg.clients.profiles.seed

    # ---- durations --------------------------------------------------------
    def examples_per_round(self, client_id: ClientId) -> int:
        """Examples a client trains on per round (epochs x shard, or steps x batch)."""
        train = self.cfg.train
        if train.local_steps is not None:
            return train.local_steps * train.batch_size
        return train.local_epochs * int(self.num_examples[client_id])

    def timing(self, result: ClientResult, server_round: int, launch: int, bytes_down: int) -> Timing:
        """The simulated duration of `result` after downloading `bytes_down` (what it was
        sent); a failed client computed nothing and sent nothing."""
        cid = result.client_id
        rng = np.random.default_rng([self.seed, 0x7153, server_round, cid, launch])
        download = _transfer_s(bytes_down, self._bandwidth(rng, cid, "down"))
        upload = _transfer_s(result.num_bytes, self._bandwidth(rng, cid, "up"))
        if not result.ok:
            return Timing(download, 0.0, 0.0)
        return Timing(download, self._compute_s(result), upload)

    def evaluation_timing(self, client_id: ClientId, server_round: int, num_examples: int, wall_s: float,
                          bytes_down: int) -> Timing:
        """The simulated duration of a federated evaluation: downloading the model, then a
        forward pass over `num_examples` held-out rows, modeled as `FORWARD_SHARE` of
        training them (or measured: `wall_s`); only metrics go up."""
        rng = np.random.default_rng([self.seed, 0x7153, server_round, client_id, _EVALUATION])
        download = _transfer_s(bytes_down, self._bandwidth(rng, client_id, "down"))
        factor = float(self.devices.speed_factor[client_id])
        if self.cfg.clients.profiles.compute is ComputeTime.measured:
            return Timing(download, wall_s * factor, 0.0)
        spe = self.cfg.clients.profiles.seconds_per_example
        return Timing(download, num_examples * spe * factor * FORWARD_SHARE, 0.0)

    def expected_compute_s(self) -> np.ndarray:
        """Modeled compute seconds per client and round (what `gpu_seconds` bills)."""
        examples = np.array([self.examples_per_round(c) for c in range(self.devices.num_clients)], dtype=np.float64)
        return examples * self.cfg.clients.profiles.seconds_per_example * self.devices.speed_factor

    def expected_durations(self) -> np.ndarray:
        """What a client's round should take at its mean bandwidths: the prior a
        selector uses before the client has been seen (as Oort's FedScale does)."""
        d = self.devices
        with np.errstate(divide="ignore"):
            transfer = self.payload_bytes * 8e-3 * (1.0 / d.down_kbps + 1.0 / d.up_kbps)
        return self.expected_compute_s() + transfer

    def _compute_s(self, result: ClientResult) -> float:
        factor = float(self.devices.speed_factor[result.client_id])
        if self.cfg.clients.profiles.compute is ComputeTime.measured:
            return result.wall_s * factor
        spe = self.cfg.clients.profiles.seconds_per_example
        return self.examples_per_round(result.client_id) * spe * factor

    def _bandwidth(self, rng: np.random.Generator, cid: ClientId, direction: str) -> float:
        mean = float(getattr(self.devices, f"{direction}_kbps")[cid])
        sigma = float(getattr(self.devices, f"{direction}_sigma_kbps")[cid])
        if not self.cfg.clients.profiles.vary_bandwidth or sigma <= 0 or math.isinf(mean):
            return mean
        for _ in range(_MAX_REDRAWS):
            draw = float(rng.normal(mean, sigma))
            if draw > 0:
                return draw
        return mean

    # ---- availability -------------------------------------------------------
    def online(self, t: float) -> np.ndarray:
        return self.availability.online(t)

    def next_change(self, t: float) -> float:
        return self.availability.next_change(t)


def build_simulation(cfg: RunConfig, num_examples: np.ndarray, payload_bytes: int) -> Simulation:
    """Devices and availability from the config; ValueError naming a bad trace."""
    seed = cfg.seed if cfg.clients.profiles.seed is None else cfg.clients.profiles.seed
    devices = build_devices(cfg.clients.profiles, cfg.clients.num_clients, seed)
    availability = build_availability(cfg.clients.availability, cfg.clients.num_clients, seed)
    return Simulation(cfg, devices, availability, num_examples, payload_bytes)


def _transfer_s(num_bytes: int, kbps: float) -> float:
    return 0.0 if num_bytes == 0 or math.isinf(kbps) else num_bytes * 8e-3 / kbps


@dataclasses.dataclass(frozen=True)
class Admission:
    """Which finished clients a round takes, and how long the round lasted."""

    kept: list[ClientId]
    """Successful clients aggregated: the first `k` by simulated finish, none after the deadline."""
    late: list[ClientId]
    """Successful clients that finished after the k-th or after the deadline."""
    round_s: float
    """Simulated seconds until the server stopped waiting."""


def admit(finish_s: Mapping[ClientId, float], ok: Iterable[ClientId], k: int,
          deadline_s: float | None = None) -> Admission:
    """The first `k` successful clients by simulated finish time (ties by id), none later
    than `deadline_s`. `finish_s` holds every selected client (inf: never reported).

    The server stops waiting as soon as `k` results are kept, the deadline passes,
    or every client has reported, whichever comes first.
    """
    ok = set(ok)
    limit = math.inf if deadline_s is None else deadline_s
    kept, late = [], []
    for cid in sorted(finish_s, key=lambda c: (finish_s[c], c)):
        if cid not in ok:
            continue
        (kept if len(kept) < k and finish_s[cid] <= limit else late).append(cid)
    stops = [max(finish_s.values(), default=0.0), limit]
    if kept and len(kept) == k:
        stops.append(finish_s[kept[-1]])
    round_s = min(stops)
    if math.isinf(round_s):  # no deadline, and a client never reported (wall-clock timeout)
        round_s = max((t for t in finish_s.values() if math.isfinite(t)), default=0.0)
    return Admission(sorted(kept), late, round_s)
