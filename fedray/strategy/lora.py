"""Server-side aggregation of LoRA adapters: FedAvg, heterogeneous ranks, exact stacking.

`model.peft.aggregation` picks one (registry `ADAPTER_AGGREGATIONS`):

- `mean`: FedAvg of A and B (or whichever `server.aggregator`). With one rank for
  everybody this is exactly the core `FlatExchange` (one broadcast, one buffer).
  With mixed ranks (HetLoRA, Cho et al. 2024) client c is sent the leading r_c
  components of the global rank-r adapter and its update is zero-padded back
  before it reaches the aggregator: the components it never trained count as
  unchanged, and then the server chain (fedavg, fedadam, ...) applies as usual.
- `stack`: exact (FLoRA, Wang et al. 2024). Clients start every round from the
  same initial adapter (B = 0) at their own rank; the server stacks the trained
  A_k and p_k B_k into one adapter whose B @ A is sum_k p_k B_k A_k, which becomes
  a merge: every model (the server's, each client actor's) folds it into its
  frozen base weights before the next round. Only the stacks travel, each to an
  actor once.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import RunConfig
from fedray.models.adapters import LoraLayout
from fedray.strategy.aggregate import Aggregator
from fedray.strategy.algorithm import Algorithm
from fedray.strategy.exchange import Exchange, FlatExchange, Fold, Put, Send, scaled
from fedray.types import ClientId

ActorOf = Callable[[ClientId], int]
"""Which actor hosts a client (actors, not clients, hold base weights)."""

ADAPTER_AGGREGATIONS: Registry[Callable[..., Exchange]] = Registry("adapter aggregation")


def build_exchange(cfg: RunConfig, algorithm: Algorithm, num_params: int, layout: LoraLayout | None,
                   ranks: np.ndarray | None, actor_of: ActorOf) -> Exchange:
    """The core flat exchange, or the one `model.peft.aggregation` names."""
    if cfg.model.peft is None:
        return FlatExchange(num_params, algorithm.aggregator(num_params))
    assert layout is not None and ranks is not None
    return ADAPTER_AGGREGATIONS.build(cfg.model.peft.aggregation, cfg, algorithm, layout, ranks, actor_of)


def _rank_payloads(layout: LoraLayout, params: np.ndarray, ranks: set[int], put: Put) -> dict[int, tuple]:
    """(ref, bytes) of the global adapter truncated to each rank, each put once."""
    out = {}
    for rank in sorted(ranks):
        out[rank] = put(params if rank == layout.rank else layout.truncate(params, rank))
    return out


def _refuse_layout_bound(cfg: RunConfig, algorithm: Algorithm, why: str) -> None:
    if any(t.layout_bound for t in algorithm.terms):
        raise ValueError(f"server.strategy={cfg.server.strategy.name!r} exchanges payloads shaped like the "
                         f"parameters, so every client must train the same adapter layout; {why}")


# ---- mean: FedAvg of A and B, zero-padded across ranks (HetLoRA) -------------------------


class PaddedAggregator:
    """Any aggregator, fed updates zero-padded from each client's rank to the global one."""

    def __init__(self, layout: LoraLayout, ranks: np.ndarray, inner: Aggregator):
        self.layout, self.ranks, self.inner = layout, ranks, inner

    @property
    def num_added(self) -> int:
        return self.inner.num_added

    def init(self) -> Any:
        return self.inner.init()

    def reset(self, state: Any = ()) -> None:
        self.inner.reset(state)

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        if int(self.ranks[client_id]) < self.layout.rank:
            update = self.layout.pad(update, self.layout.rank)
        self.inner.add(client_id, weight, update)

    def result(self) -> tuple[np.ndarray, Any]:
        return self.inner.result()


class RankPaddedExchange:
    """HetLoRA: each client gets and returns its own rank; aggregation is over padded updates."""

    def __init__(self, layout: LoraLayout, ranks: np.ndarray, aggregator: Aggregator):
        self.layout, self.ranks = layout, ranks
        self.aggregator = PaddedAggregator(layout, ranks, aggregator)

    def broadcast(self, params: np.ndarray, merges: Sequence[np.ndarray],
                  selected: Sequence[ClientId], put: Put, store: Put | None = None) -> dict[ClientId, Send]:
        payloads = _rank_payloads(self.layout, params, {int(self.ranks[c]) for c in selected}, put)
        sends = {}
        for cid in selected:
            ref, num_bytes = payloads[int(self.ranks[cid])]
            sends[cid] = Send({"params": ref}, num_bytes)
        return sends

    def update_size(self, client_id: ClientId) -> int:
        return self.layout.num_params(int(self.ranks[client_id]))

    def fold(self, aggregate: np.ndarray, scale: float = 1.0) -> Fold:
        return Fold(step=scaled(aggregate, scale))


@ADAPTER_AGGREGATIONS.register("mean")
def mean_exchange(cfg: RunConfig, algorithm: Algorithm, layout: LoraLayout, ranks: np.ndarray,
                  actor_of: ActorOf) -> Exchange:
    """FedAvg of A and B: the core exchange for one rank, HetLoRA padding for several."""
    num_params = layout.num_params()
    if np.all(ranks == layout.rank):
        return FlatExchange(num_params, algorithm.aggregator(num_params))  # nothing rank-specific
    _refuse_layout_bound(cfg, algorithm, f"model.peft gives the clients ranks {sorted(set(ranks.tolist()))}")
    return RankPaddedExchange(layout, ranks, algorithm.aggregator(num_params))


# ---- stack: exact aggregation of B @ A (FLoRA) ------------------------------------------


class StackedAdapters:
    """Collects the clients' trained adapters in the order they are added (client
    order, fixed by `InOrder`); `result` is their stack.

    Clients return deltas from the adapter they were sent, the global adapter
    truncated to their rank, so each trained adapter is that start + delta. In
    stacking the global adapter never changes, so a result from an earlier
    broadcast (async mode) has the same start.
    """

    def __init__(self, layout: LoraLayout, ranks: np.ndarray):
        self.layout, self.ranks = layout, ranks
        self._params: np.ndarray | None = None
        self._start: dict[int, np.ndarray] = {}
        self.reset()

    def start_from(self, params: np.ndarray) -> None:
        """The global adapter the clients were sent (at their ranks)."""
        if self._params is None or not np.array_equal(params, self._params):
            self._params, self._start = np.array(params), {}

    def start(self, rank: int) -> np.ndarray:
        if rank not in self._start:
            assert self._params is not None, "nothing was broadcast yet"
            self._start[rank] = self.layout.truncate(self._params, rank)
        return self._start[rank]

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self._adapters: dict[ClientId, tuple[float, np.ndarray]] = {}
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        assert client_id not in self._adapters, f"client {client_id} added twice"
        trained = self.start(int(self.ranks[client_id])) + update
        self._adapters[client_id] = (float(weight), trained)
        self.num_added += 1

    def result(self) -> tuple[np.ndarray, Any]:
        if not self._adapters:
            raise ValueError("no client update to aggregate")
        return self.layout.stack(list(self._adapters.values())), ()


class StackExchange:
    """FLoRA: the same initial adapter every round, exact stacks folded into the base."""

    def __init__(self, layout: LoraLayout, ranks: np.ndarray, actor_of: ActorOf):
        self.layout, self.ranks, self.actor_of = layout, ranks, actor_of
        self.aggregator = StackedAdapters(layout, ranks)
        self._refs: list = []
        self._sent: dict[int, int] = {}
        """Merges each actor has been sent (fresh actors after a resume start at 0)."""

    def broadcast(self, params: np.ndarray, merges: Sequence[np.ndarray],
                  selected: Sequence[ClientId], put: Put, store: Put | None = None) -> dict[ClientId, Send]:
        store = store or put
        self._refs += [store(m)[0] for m in merges[len(self._refs) :]]
        refs = tuple(self._refs)
        payloads = _rank_payloads(self.layout, params, {int(self.ranks[c]) for c in selected}, put)
        self.aggregator.start_from(params)
        sends = {}
        for cid in selected:
            ref, num_bytes = payloads[int(self.ranks[cid])]
            actor = self.actor_of(cid)
            new = sum(int(m.nbytes) for m in merges[self._sent.get(actor, 0) :])
            self._sent[actor] = len(refs)
            sends[cid] = Send({"params": ref}, num_bytes + new, refs)
        return sends

    def update_size(self, client_id: ClientId) -> int:
        return self.layout.num_params(int(self.ranks[client_id]))

    def fold(self, aggregate: np.ndarray, scale: float = 1.0) -> Fold:
        """The stack as a merge; a scale applies to B @ A, so to B alone."""
        return Fold(merge=aggregate if scale == 1.0 else self.layout.concat([aggregate], [scale]))


@ADAPTER_AGGREGATIONS.register("stack")
def stack_exchange(cfg: RunConfig, algorithm: Algorithm, layout: LoraLayout, ranks: np.ndarray,
                   actor_of: ActorOf) -> Exchange:
    """FLoRA's exact stacking: there is no mean for a server step or a robust aggregator."""
    problems = []
    if cfg.server.strategy.name != "fedavg" or cfg.server.transforms:
        problems.append(f"server.strategy.name must be fedavg with no server.transforms, got "
                        f"{cfg.server.strategy.name!r} and {len(cfg.server.transforms)} transform(s)")
    if cfg.server.aggregator.name != "weighted_mean":
        problems.append(f"server.aggregator.name must be weighted_mean, got {cfg.server.aggregator.name!r}")
    if problems:
        raise ValueError("model.peft.aggregation=stack folds the exact weighted sum of the clients' "
                         "adapters into the base weights, so there is no aggregate to transform: "
                         + "; ".join(problems))
    _refuse_layout_bound(cfg, algorithm, "model.peft.aggregation=stack stacks adapters of growing rank")
    return StackExchange(layout, ranks, actor_of)
