"""Config sections of a run's records of its clients: the update ledger and contribution evaluation."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import Any, Dict

LEDGER_CODECS = ("float32", "float16", "int8")
"""How the ledger stores each update: as sent (float32), half precision, or int8 with
one float32 scale per update (4x smaller; FedEraser only needs directions and norms,
and the norm is stored exactly beside it)."""


@dataclasses.dataclass
class LedgerConfig:
    """`server.ledger`: a record of every accepted client update, for unlearning (off by default)."""

    every: int = 0
    """Record rounds 1, 1 + every, 1 + 2 x every, ... (FedEraser's retention interval);
    0: no ledger."""
    codec: str = "float32"
    """How updates are stored: `float32` (as aggregated), `float16`, or `int8` (one
    float32 scale per update)."""

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def records(self, server_round: int) -> bool:
        """Whether `server_round` (from 1) goes into the ledger."""
        return self.enabled and (server_round - 1) % self.every == 0

    def errors(self) -> list[str]:
        out = []
        if self.every < 0:
            out.append(f"server.ledger.every must be >= 0 (0: no ledger), got {self.every}")
        if self.codec not in LEDGER_CODECS:
            out.append(f"server.ledger.codec must be one of {list(LEDGER_CODECS)}, got {self.codec!r}")
        return out


class Utility(enum.Enum):
    """What a sub-model is worth: held-out accuracy, or minus the held-out loss."""

    accuracy = "accuracy"
    loss = "loss"


@dataclasses.dataclass
class ContributionConfig:
    """`server.contribution`: each round, what each aggregated client's update was worth."""

    name: str = "none"
    """`gtg_shapley`, `leave_one_out`, `exact_shapley` (all coalitions: 2^n evaluations),
    `none`, or a dotted path."""
    args: Dict[str, Any] = field(default_factory=dict)
    """The method's arguments, e.g. `{epsilon: 0.001, min_permutations: 30, max_permutations: 100,
    tolerance: 0.05}` for `gtg_shapley`; every method takes `normalize`: `subset` (a coalition's
    model is its own weighted mean) or `total` (divided by the whole round's weight)."""
    utility: Utility = Utility.accuracy
    """Value of a sub-model on the server's held-out split: `accuracy`, or `loss` (minus the loss)."""
    budget: float = 0.0
    """Incentive budget shared out in proportion to each client's non-negative cumulative
    contribution (`payout` in clients.parquet and `fedray report`); 0: no payout."""

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def errors(self) -> list[str]:
        if self.budget < 0:
            return [f"server.contribution.budget must be >= 0, got {self.budget}"]
        return []


def record_problems(ledger: LedgerConfig, contribution: ContributionConfig, peft: Any) -> list[str]:
    """The ledger and contribution evaluation keep updates in the global parameters'
    layout: with LoRA, every client must train the global adapter's rank and the
    server must average (not stack) adapters."""
    if peft is None or not (ledger.enabled or contribution.enabled):
        return []
    if peft.aggregation == "mean" and peft.rank_rule == "uniform" and set(peft.client_ranks) <= {peft.r}:
        return []
    return ["server.ledger and server.contribution need every update in the global adapter's layout: "
            f"model.peft.aggregation=mean with every client at rank model.peft.r={peft.r} "
            f"(got aggregation={peft.aggregation!r}, rank_rule={peft.rank_rule!r}, "
            f"client_ranks={list(peft.client_ranks)})"]
