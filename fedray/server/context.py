"""What the rounds of a run share: the fixed collaborators, and the per-round tally.

A round is a function of explicit data (`fedray.server.loop.run_round`): this
context, the algorithm, the server state and the client handles. Nothing here
changes between rounds except the generator (whose state the server checkpoints)
and the reusable `InOrder` gate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from fedray.config.schema import RunConfig
from fedray.hetero.simulation import Simulation
from fedray.selection.base import Selector
from fedray.server.state import ServerState
from fedray.strategy.aggregate import Aggregator, InOrder
from fedray.strategy.exchange import Exchange
from fedray.strategy.staleness import StalenessWeight
from fedray.strategy.terms import Term
from fedray.types import ClientId, Context


@dataclasses.dataclass
class RoundContext:
    """The run's fixed collaborators of a round (besides algorithm, state and clients)."""

    cfg: RunConfig
    selector: Selector
    simulation: Simulation
    exchange: Exchange
    """Broadcast layout and the aggregator (per LoRA rank, stacking, or flat)."""
    staleness: StalenessWeight
    rng: np.random.Generator
    """The server's generator (selection); its state is checkpointed."""
    evaluate: Callable[[ServerState], dict[str, float]]
    """Held-out evaluation of the global model in a state."""
    in_order: InOrder = dataclasses.field(default_factory=InOrder)
    task_of: Callable[[int], int] = lambda server_round: 0
    """The federation's data-schedule task in a round (`Context.task` on the server)."""
    eval_columns: tuple[str, ...] = ()
    """Extra metrics `evaluate` reports (e.g. per-task accuracy), each a metrics column:
    NaN in rounds without an evaluation."""

    def at(self, server_round: int, client_id: ClientId | None = None, num_aggregated: int = 0) -> Context:
        """The transform/term context of a round, on the server or for one client."""
        return Context(server_round, client_id, self.cfg.seed, self.cfg.clients.num_clients, num_aggregated,
                       self.task_of(server_round))


class Reducers:
    """The objective terms' uplink payloads, each combined over the round's clients by
    the aggregator its term asked for (in the same client order as the updates)."""

    def __init__(self, terms: Sequence[Term], num_params: int):
        self.per_term: list[dict[str, Aggregator]] = [t.reducers(num_params) for t in terms]

    def reset(self) -> None:
        for reducers in self.per_term:
            for aggregator in reducers.values():
                aggregator.reset()

    def missing(self, payloads: dict[str, Any]) -> list[str]:
        """Names a term needs that a client's result lacks."""
        return [name for reducers in self.per_term for name in reducers if name not in payloads]

    def add(self, client_id: ClientId, weight: float, payloads: dict[str, Any]) -> None:
        for reducers in self.per_term:
            for name, aggregator in reducers.items():
                aggregator.add(client_id, weight, payloads[name])

    def results(self) -> list[dict[str, Any]]:
        """Per term, the combined payloads (names with no contribution left out)."""
        return [{name: agg.result()[0] for name, agg in reducers.items() if agg.num_added}
                for reducers in self.per_term]


@dataclasses.dataclass
class RoundTally:
    """What the collect and validate phases counted."""

    succeeded: int = 0
    rejected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    total_weight: float = 0.0
    """Sum of the weights the accepted updates were aggregated with."""
    losses: list = dataclasses.field(default_factory=list)
    norms: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    clients: list = dataclasses.field(default_factory=list)
    staleness: list = dataclasses.field(default_factory=list)
