"""Config schema of heterogeneity-aware scheduling: simulated client profiles,
availability, and the selectors' parameters (`clients.profiles`,
`clients.availability`, `server.selection`). Part of `schema.py`'s contract."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import Dict, Optional


class ComputeTime(enum.Enum):
    """Where a client's simulated compute time comes from."""

    modeled = "modeled"
    """Examples trained x `clients.profiles.seconds_per_example` x its speed
    factor: computed, so runs are reproducible bit for bit."""
    measured = "measured"
    """Its measured wall time on this machine x its speed factor: real, but noisy."""


@dataclasses.dataclass
class ProfilesConfig:
    """Simulated heterogeneity: each client's compute speed and bandwidth.

    A client's simulated round duration is download + compute + upload: its
    compute time scaled by its speed factor, and the payload bytes over its
    bandwidth. Time is computed, never slept, so experiments stay fast.
    """

    source: Optional[str] = None
    """null: every client is the reference device with unlimited bandwidth;
    `flash`: the bundled FLASH trace (AI-Benchmark phones, measured network speeds);
    `lognormal`: speed and bandwidth drawn from log-normal distributions;
    a `.csv`/`.parquet` trace file in the same schema; or a dotted path."""
    seed: Optional[int] = None
    """Seed for assigning trace rows and drawing bandwidths (null: the run's `seed`)."""
    compute: ComputeTime = ComputeTime.modeled
    """Simulated compute time: `modeled` (examples x `seconds_per_example` x the device's speed
    factor: reproducible bit for bit) or `measured` (wall time on this machine x speed factor)."""
    seconds_per_example: float = 0.01
    """`modeled`: seconds the reference device (speed factor 1) needs per training example."""
    speed_sigma: float = 0.6
    """`lognormal`: sigma of log(speed factor) (median 1)."""
    bandwidth_kbps: float = 4000.0
    """`lognormal`: median down- and upload bandwidth, kbit/s."""
    bandwidth_sigma: float = 0.5
    """`lognormal`: sigma of log(bandwidth)."""
    vary_bandwidth: bool = True
    """Draw each transfer's bandwidth from the client's N(mean, sigma), as FLASH does
    (seeded per round and client, so still reproducible); false: always the mean."""

    def errors(self) -> list[str]:
        out = []
        for key in ("seconds_per_example", "bandwidth_kbps"):
            if not getattr(self, key) > 0:
                out.append(f"clients.profiles.{key} must be > 0, got {getattr(self, key)}")
        for key in ("speed_sigma", "bandwidth_sigma"):
            if getattr(self, key) < 0:
                out.append(f"clients.profiles.{key} must be >= 0, got {getattr(self, key)}")
        return out


@dataclasses.dataclass
class AvailabilityConfig:
    """When simulated clients can be selected (on the simulated clock)."""

    model: str = "always"
    """`always`; `periodic` (each client online `online_fraction` of every `period_s`,
    at its own phase); a `.csv`/`.parquet` file of online intervals
    (`client_id`, `start_s`, `end_s`); or a dotted path."""
    period_s: float = 3600.0
    """`periodic`: length of one on/off cycle, simulated seconds; for a trace file,
    the trace repeats with this period (0: it does not repeat)."""
    online_fraction: float = 0.8
    """`periodic`: share of each period a client is online."""

    def errors(self) -> list[str]:
        out = []
        if self.period_s < 0:
            out.append(f"clients.availability.period_s must be >= 0, got {self.period_s}")
        if not 0 < self.online_fraction <= 1:
            out.append(f"clients.availability.online_fraction must be in (0, 1], got {self.online_fraction}")
        return out


@dataclasses.dataclass
class OortConfig:
    """Oort (Lai et al., OSDI 2021); defaults follow its FedScale implementation."""

    exploration: float = 0.9
    """Initial share of each selection spent on clients never seen (epsilon)."""
    exploration_decay: float = 0.98
    """Epsilon is multiplied by this every round..."""
    exploration_min: float = 0.3
    """...down to this floor (0 once every client has been seen)."""
    penalty: float = 2.0
    """alpha: utility x (T / duration)^alpha for clients slower than the preferred duration T."""
    staleness: float = 0.1
    """Weight c of the staleness bonus sqrt(c log(round) / last round seen)."""
    cutoff: float = 0.95
    """Exploit among clients whose utility is at least this share of the k-th best."""
    preferred_percentile: float = 30.0
    """Initial preferred round duration T, as a percentile of the clients' durations."""
    pacer_step: int = 10
    """Every this many rounds the pacer compares the exploited utility of the last
    two windows and relaxes T (utility flat) or tightens it (changing sharply)."""
    pacer_delta: float = 5.0
    """Percentile points by which the pacer moves T."""

    def errors(self) -> list[str]:
        out = []
        for key in ("exploration", "exploration_min", "cutoff"):
            if not 0 <= getattr(self, key) <= 1:
                out.append(f"server.selection.oort.{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0 < self.exploration_decay <= 1:
            out.append(f"server.selection.oort.exploration_decay must be in (0, 1], got {self.exploration_decay}")
        for key in ("penalty", "staleness", "pacer_delta"):
            if getattr(self, key) < 0:
                out.append(f"server.selection.oort.{key} must be >= 0, got {getattr(self, key)}")
        if not 0 < self.preferred_percentile <= 100:
            out.append(
                f"server.selection.oort.preferred_percentile must be in (0, 100], got {self.preferred_percentile}"
            )
        if self.pacer_step < 1:
            out.append(f"server.selection.oort.pacer_step must be >= 1, got {self.pacer_step}")
        return out


@dataclasses.dataclass
class DeadlineConfig:
    """Over-commitment (Bonawitz et al., MLSys 2019)."""

    overcommit: float = 0.3
    """Select ceil((1 + overcommit) x clients_per_round); the first clients_per_round
    to finish (simulated time) are aggregated, the rest dropped (sync) or deferred (async)."""

    def errors(self) -> list[str]:
        if self.overcommit < 0:
            return [f"server.selection.deadline.overcommit must be >= 0, got {self.overcommit}"]
        return []


class Cost(enum.Enum):
    """What a client's participation costs, for `pareto`."""

    gpu_seconds = "gpu_seconds"
    """Its simulated compute seconds (the accelerator time it occupies)."""
    price = "price"
    """Its simulated compute seconds x the price of its client type (`pareto.prices`)."""


@dataclasses.dataclass
class ParetoConfig:
    """Latency-versus-cost selection on the Pareto front."""

    weight: float = 0.5
    """Where on the front: 1 minimises the expected round latency, 0 the cost."""
    cost: Cost = Cost.gpu_seconds
    """`gpu_seconds` (simulated compute seconds) or `price` (per `client_type`, from `prices`)."""
    prices: Dict[str, float] = field(default_factory=lambda: {"high": 3.0, "mid": 1.5, "low": 1.0})
    """`price`: price per simulated compute second of each client type (the trace's
    `client_type` column); types not listed cost 1."""
    candidates: float = 3.0
    """The front is computed over ceil(candidates x clients_per_round) clients drawn
    at random, so that the selection still varies from round to round."""

    def errors(self) -> list[str]:
        out = []
        if not 0 <= self.weight <= 1:
            out.append(f"server.selection.pareto.weight must be in [0, 1], got {self.weight}")
        if self.candidates < 1:
            out.append(f"server.selection.pareto.candidates must be >= 1, got {self.candidates}")
        bad = {k: v for k, v in self.prices.items() if not v >= 0}
        if bad:
            out.append(f"server.selection.pareto.prices must be >= 0, got {bad}")
        return out


@dataclasses.dataclass
class PowerOfChoiceConfig:
    """Power-of-choice (Cho et al., AISTATS 2022)."""

    candidates: float = 2.0
    """Draw ceil(candidates x clients_per_round) clients (probability proportional
    to their example counts) and keep the highest-loss ones."""

    def errors(self) -> list[str]:
        if self.candidates < 1:
            return [f"server.selection.power_of_choice.candidates must be >= 1, got {self.candidates}"]
        return []


@dataclasses.dataclass
class SelectionConfig:
    name: str = "random"
    """Client selector: `random`, `oort`, `power_of_choice`, `deadline`, `pareto`,
    `poisson` (each client joins with probability clients_per_round / num_clients),
    or a dotted path to a builder."""
    oort: OortConfig = field(default_factory=OortConfig)
    deadline: DeadlineConfig = field(default_factory=DeadlineConfig)
    pareto: ParetoConfig = field(default_factory=ParetoConfig)
    power_of_choice: PowerOfChoiceConfig = field(default_factory=PowerOfChoiceConfig)

    def errors(self) -> list[str]:
        return (self.oort.errors() + self.deadline.errors() + self.pareto.errors()
                + self.power_of_choice.errors())
