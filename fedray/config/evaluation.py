"""`server.evaluation`: where the global model is evaluated, how often, on which clients."""

from __future__ import annotations

import dataclasses
import enum
from typing import Union


class EvalWhere(enum.Enum):
    """Where the global model is evaluated."""

    server = "server"
    """On the server's held-out split (`data.test_fraction`)."""
    clients = "clients"
    """On the clients' own held-out rows (`data.client_test_fraction`); the server needs no data."""
    both = "both"
    """Both of the above."""
    none = "none"
    """Not at all (training metrics only)."""


@dataclasses.dataclass
class EvaluationConfig:
    """Federated evaluation: clients evaluate the broadcast global model (and their personal
    models, where personalisation gives them one) on their own held-out rows; only metrics
    leave them. Server-side evaluation keeps `server.eval_every`."""

    where: EvalWhere = EvalWhere.server
    """`server` (the server's held-out split), `clients` (each evaluating client's own
    held-out rows, `data.client_test_fraction`), `both`, or `none`."""
    every: int = 1
    """Clients evaluate every N rounds (and always after the last round)."""
    fraction: Union[float, str] = "all"
    """Share of the clients that evaluate in a round, in (0, 1] (a seeded choice per
    round, recorded in evaluation.parquet), or `all`."""
    threshold: float = 0.5
    """Accuracy under which a client counts as badly served: metrics.parquet's
    `fed_<model>_below` is the share of evaluating clients under it."""

    @property
    def on_clients(self) -> bool:
        return self.where in (EvalWhere.clients, EvalWhere.both)

    @property
    def on_server(self) -> bool:
        return self.where in (EvalWhere.server, EvalWhere.both)

    def errors(self) -> list[str]:
        out = []
        if self.every < 1:
            out.append(f"server.evaluation.every must be >= 1, got {self.every}")
        if isinstance(self.fraction, str):
            if self.fraction != "all":
                out.append(f"server.evaluation.fraction must be a number in (0, 1] or 'all', got {self.fraction!r}")
        elif not 0 < self.fraction <= 1:
            out.append(f"server.evaluation.fraction must be in (0, 1] or 'all', got {self.fraction}")
        if not 0 <= self.threshold <= 1:
            out.append(f"server.evaluation.threshold must be an accuracy in [0, 1], got {self.threshold}")
        return out


def evaluation_problems(evaluation: EvaluationConfig, test_fraction: float, client_test_fraction: float,
                        has_own_test: bool, mode: str, contribution: str) -> list[str]:
    """Cross-field checks: each place that evaluates has rows to evaluate on."""
    out = []
    if contribution != "none" and not evaluation.on_server:
        out.append(f"server.contribution.name={contribution} values updates on the server's split: it needs "
                   f"server.evaluation.where: server or both (got {evaluation.where.value})")
    if evaluation.on_clients and not client_test_fraction > 0:
        out.append(f"server.evaluation.where={evaluation.where.value} evaluates on the clients' held-out rows: "
                   f"set data.client_test_fraction > 0 (got {client_test_fraction})")
    if evaluation.on_server and not test_fraction > 0 and not has_own_test:
        out.append(f"server.evaluation.where={evaluation.where.value} needs a server split: data.test_fraction=0 "
                   "leaves the server no rows (use server.evaluation.where: clients or none)")
    if evaluation.on_clients and mode == "async":
        out.append("server.evaluation.where=clients/both needs server.mode=sync: an asynchronous client may "
                   "still be training on an older model")
    return out
