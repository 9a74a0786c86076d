"""A communication budget (`server.budget_mb`): how many rounds fit, and when to stop.

FlowerTune's rule: a run may move at most the budget in model traffic, up and
down, summed over its rounds; the run stops cleanly after the last round that
fits. Before the first round one round is estimated as every selected client
downloading and uploading every trainable parameter in float32 (for LoRA, the
adapter); after each round the estimate is the largest round measured so far
(`bytes_up + bytes_down`, codecs and failures included). 1 MB = 10^6 bytes.
It runs in the driver, between rounds; the round itself knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import math

MB = 1_000_000
"""Bytes per MB (decimal, as link speeds and FlowerTune's budget are stated)."""


def estimated_round_bytes(clients_per_round: int, num_params: int) -> int:
    """One round before any is measured: each client receives and sends every
    trainable parameter as float32."""
    return 2 * clients_per_round * num_params * 4


@dataclasses.dataclass
class CommBudget:
    """The budget, what the rounds so far used, and what one round is expected to use."""

    budget_bytes: float
    round_bytes: float
    """Expected traffic of the next round: the estimate, then the largest measured round."""
    used_bytes: float = 0.0
    measured: bool = False
    """Whether `round_bytes` comes from a finished round (else it is the estimate)."""
    stopped: bool = False
    """True once the run stopped because the next round would not fit."""

    @classmethod
    def start(cls, budget_mb: float, clients_per_round: int, num_params: int, used_bytes: float = 0.0,
              measured: float = 0.0) -> "CommBudget":
        """The budget at a run's start (`used_bytes`, `measured`: from the rounds a resumed run already did)."""
        if measured:
            return cls(budget_mb * MB, measured, used_bytes, measured=True)
        return cls(budget_mb * MB, estimated_round_bytes(clients_per_round, num_params), used_bytes)

    def rounds_that_fit(self) -> int:
        """More rounds the budget allows at the current estimate."""
        return max(0, math.floor((self.budget_bytes - self.used_bytes) / max(1.0, self.round_bytes)))

    def record(self, bytes_up: int, bytes_down: int) -> bool:
        """Count a finished round; whether another one still fits."""
        spent = bytes_up + bytes_down
        self.used_bytes += spent
        self.round_bytes = max(self.round_bytes, spent) if self.measured else spent
        self.measured = True
        return self.rounds_that_fit() >= 1

    def describe_start(self, rounds: int, first_round: int) -> str:
        fit = self.rounds_that_fit()
        last = min(rounds, first_round - 1 + fit)
        return (f"communication budget: server.budget_mb={self.budget_bytes / MB:g} fits {fit} round(s) of "
                f"~{self.round_bytes / MB:.3f} MB; the run stops after round {last} of {rounds}"
                if last < rounds else
                f"communication budget: server.budget_mb={self.budget_bytes / MB:g} fits all {rounds} rounds "
                f"(~{self.round_bytes / MB:.3f} MB each)")

    def summary(self) -> dict:
        """summary.json's `communication` entry."""
        return {"budget_mb": self.budget_bytes / MB, "used_mb": self.used_bytes / MB,
                "round_mb": self.round_bytes / MB, "stopped_by_budget": self.stopped}
