"""What the rounds of a run share: the fixed collaborators, and the per-round tally.

A round is a function of explicit data (`fedray.server.loop.run_round`): this
context, the algorithm, the server state and the transport to the clients. Nothing here
changes between rounds except the generator (whose state the server checkpoints) and
three pieces no round's result depends on: the LoRA stack exchange's count of merges
each actor was sent (it counts `bytes_down`; fresh actors after a resume really
download every merge again), the broadcast codec's put counter (with a per-process
random id, the key under which an actor caches a decoded payload), and secure
aggregation's `ServerRound` (made and used within one attempt, before any checkpoint).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from fedray.compress.downlink import BroadcastEncoder
from fedray.compress.rate import Instruct
from fedray.config.schema import RunConfig
from fedray.hetero.simulation import Simulation
from fedray.selection.base import Selector
from fedray.server.state import ServerState
from fedray.strategy.aggregate import Aggregator
from fedray.strategy.exchange import Exchange, Send
from fedray.strategy.staleness import StalenessWeight
from fedray.strategy.terms import Term
from fedray.types import ClientId, Context


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """One model update's accepted client updates, as aggregated, for a `RoundObserver`."""

    server_round: int
    params_before: np.ndarray | None
    """The global parameters the update was applied to (None if updates were not kept)."""
    accepted: tuple[tuple[ClientId, float, np.ndarray], ...]
    """(client, aggregation weight, decoded update) in aggregation order; empty unless
    the observer wanted this round's updates."""
    evaluation: dict[str, float]
    """The held-out metrics of the new global model (empty if not evaluated this round)."""


class RoundObserver(Protocol):
    """Sees every model update after aggregation, with its accepted updates in the rounds
    it asks for (the update ledger, contribution evaluation). Updates are kept only for
    those rounds, so a streamed weighted mean stays streamed otherwise."""

    def wants_updates(self, server_round: int) -> bool: ...

    def observe(self, record: RoundRecord, state: ServerState) -> dict[str, float]:
        """Called with the new global model in `state`; returns extra metrics columns."""


class RoundStages(Protocol):
    """Protocol stages around a sync round's training, for protocols that need every
    selected client before training and every result after it (secure aggregation:
    key exchange before, unmasking the sum after)."""

    def before_launch(self, server_round: int, sends: dict[ClientId, Send],
                      tally: "RoundTally") -> dict[ClientId, Send]:
        """What each client is sent, with the stages' own payloads; clients left out
        dropped out and do not train."""

    def after_collect(self, server_round: int, tally: "RoundTally") -> str | None:
        """Finish the aggregate once every result is in; why the round fails, or None."""


class NoStages:
    """Rounds without extra stages."""

    def before_launch(self, server_round: int, sends: dict[ClientId, Send], tally: "RoundTally"):
        return sends

    def after_collect(self, server_round: int, tally: "RoundTally") -> str | None:
        return None


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
    observer: RoundObserver | None = None
    """Sees every model update (None: nobody; updates stream)."""
    downlink: BroadcastEncoder | None = None
    """The broadcast codec (`server.codec`); None sends the parameters as they are."""
    instruct: Instruct | None = None
    """Per-client instructions for each launch (`FitInstructions.config`), e.g. the upload
    budgets of `rate: auto`; None sends none."""
    task_of: Callable[[int], int] = lambda server_round: 0
    """The federation's data-schedule task in a round (`Context.task` on the server)."""
    eval_columns: tuple[str, ...] = ()
    """Extra metrics `evaluate` reports (e.g. per-task accuracy), each a metrics column:
    NaN in rounds without an evaluation."""

    def new_tally(self, server_round: int) -> "RoundTally":
        """An empty tally for an attempt at `server_round`, keeping accepted updates if
        the observer wants them."""
        keep = self.observer is not None and self.observer.wants_updates(server_round)
        return RoundTally(accepted=[] if keep else None)
    stages: RoundStages = dataclasses.field(default_factory=NoStages)
    last_round: int = 0
    """The run's last round: `server.rounds`, or an earlier one when a privacy budget
    runs out first (0: `server.rounds`)."""

    @property
    def final_round(self) -> int:
        return self.last_round or self.cfg.server.rounds

    def at(self, server_round: int, client_id: ClientId | None = None, num_aggregated: int = 0,
           downlink: dict | None = None) -> Context:
        """The transform/term context of a round, on the server or for one client."""
        return Context(server_round, client_id, self.cfg.seed, self.cfg.clients.num_clients, num_aggregated,
                       downlink or {}, task=self.task_of(server_round))


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
    accepted: list | None = None
    """(client, weight, decoded update) of every accepted update, for the observer; None:
    not kept."""
    downlink: dict = dataclasses.field(default_factory=dict)
    """The objective terms' broadcast payloads of this round (the server chain sees them)."""
    sent: dict = dataclasses.field(default_factory=dict)
    """Client -> fit token of every update taken this round that left a pending state."""
    committed: dict = dataclasses.field(default_factory=dict)
    """Client -> fit token of the aggregated ones among them (committed if the round completes)."""
    metrics: dict = dataclasses.field(default_factory=dict)
    """Extra per-round metrics.parquet columns: the stages' figures (e.g. `secagg_dropped`)
    and per-round sums (codec seconds and counts)."""

    def add(self, name: str, value: float) -> None:
        self.metrics[name] = self.metrics.get(name, 0.0) + value
