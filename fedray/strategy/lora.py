"""Server-side aggregation of LoRA adapters: FedAvg, heterogeneous ranks, exact stacking.

`model.peft.aggregation` picks one (registry `ADAPTER_AGGREGATIONS`):

- `mean`: FedAvg of A and B. With one rank for everybody this is exactly the core
  `FlatExchange` (one broadcast, one buffer). With mixed ranks (HetLoRA, Cho et
  al. 2024) client c is sent the leading r_c components of the global rank-r
  adapter and its update is zero-padded back before the weighted mean: the
  components it never trained count as unchanged, and then the server's
  transform chain (fedavg, fedadam, ...) applies as usual.
- `stack`: exact (FLoRA, Wang et al. 2024). Clients start every round from the
  same initial adapter (B = 0) at their own rank; the server stacks the trained
  A_k and p_k B_k into one adapter whose B @ A is sum_k p_k B_k A_k, appends it
  to `ServerState.merges`, and every model (the server's, each client actor's)
  folds it into its frozen base weights before the next round. Only the stacks
  travel, each to an actor once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import RunConfig
from fedray.models.adapters import LoraLayout
from fedray.strategy.aggregate import WeightedMean
from fedray.strategy.exchange import Exchange, FlatExchange, Send, apply_transform
from fedray.transforms import UpdateTransform
from fedray.types import ClientId

if TYPE_CHECKING:
    from fedray.server.state import ServerState

ActorOf = Callable[[ClientId], int]
"""Which actor hosts a client (actors, not clients, hold base weights)."""

ADAPTER_AGGREGATIONS: Registry[Callable[..., Exchange]] = Registry("adapter aggregation")


def build_exchange(cfg: RunConfig, num_params: int, layout: LoraLayout | None,
                   ranks: np.ndarray | None, actor_of: ActorOf) -> Exchange:
    """The core flat exchange, or the one `model.peft.aggregation` names."""
    if cfg.model.peft is None:
        return FlatExchange(num_params)
    assert layout is not None and ranks is not None
    return ADAPTER_AGGREGATIONS.build(cfg.model.peft.aggregation, cfg, layout, ranks, actor_of)


def _rank_payloads(layout: LoraLayout, params: np.ndarray, ranks: set[int]) -> dict[int, tuple]:
    """(ref, array) of the global adapter truncated to each rank, each put once."""
    import ray

    out = {}
    for rank in sorted(ranks):
        payload = params if rank == layout.rank else layout.truncate(params, rank)
        out[rank] = (ray.put(payload), payload)
    return out


# ---- mean: FedAvg of A and B, zero-padded across ranks (HetLoRA) -------------------------


class PaddedMean:
    """`WeightedMean` over updates zero-padded from each client's rank to the global one."""

    def __init__(self, layout: LoraLayout, ranks: np.ndarray):
        self.layout, self.ranks = layout, ranks
        self.mean = WeightedMean(layout.num_params())

    @property
    def num_added(self) -> int:
        return self.mean.num_added

    def reset(self) -> None:
        self.mean.reset()

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        if int(self.ranks[client_id]) < self.layout.rank:
            update = self.layout.pad(update, self.layout.rank)
        self.mean.add(client_id, weight, update)

    def result(self) -> np.ndarray:
        return self.mean.result()


class RankPaddedExchange:
    """HetLoRA: each client gets and returns its own rank; the mean is over padded updates."""

    def __init__(self, layout: LoraLayout, ranks: np.ndarray):
        self.layout, self.ranks = layout, ranks
        self.aggregator = PaddedMean(layout, ranks)

    def broadcast(self, state: "ServerState", selected: Sequence[ClientId]) -> dict[ClientId, Send]:
        payloads = _rank_payloads(self.layout, state.params, {int(self.ranks[c]) for c in selected})
        sends = {}
        for cid in selected:
            ref, payload = payloads[int(self.ranks[cid])]
            sends[cid] = Send(ref, int(payload.nbytes), int(payload.size))
        return sends

    apply = staticmethod(apply_transform)


@ADAPTER_AGGREGATIONS.register("mean")
def mean_exchange(cfg: RunConfig, layout: LoraLayout, ranks: np.ndarray, actor_of: ActorOf) -> Exchange:
    """FedAvg of A and B: the core exchange for one rank, HetLoRA padding for several."""
    if np.all(ranks == layout.rank):
        return FlatExchange(layout.num_params())  # the fast path: nothing rank-specific
    return RankPaddedExchange(layout, ranks)


# ---- stack: exact aggregation of B @ A (FLoRA) ------------------------------------------


class StackedAdapters:
    """Collects the clients' trained adapters in the order they are added (client
    order, fixed by `InOrder`); `result` is their stack.

    Clients return deltas from the adapter they were sent (`start`), so each
    trained adapter is start + delta at the client's rank.
    """

    def __init__(self, layout: LoraLayout, ranks: np.ndarray):
        self.layout, self.ranks = layout, ranks
        self.start: dict[int, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self._adapters: dict[ClientId, tuple[float, np.ndarray]] = {}
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        assert client_id not in self._adapters, f"client {client_id} added twice"
        trained = self.start[int(self.ranks[client_id])] + update
        self._adapters[client_id] = (float(weight), trained)
        self.num_added += 1

    def result(self) -> np.ndarray:
        if not self._adapters:
            raise ValueError("no client update to aggregate")
        return self.layout.stack(list(self._adapters.values()))


class StackExchange:
    """FLoRA: the same initial adapter every round, exact stacks folded into the base."""

    def __init__(self, layout: LoraLayout, ranks: np.ndarray, actor_of: ActorOf):
        self.layout, self.ranks, self.actor_of = layout, ranks, actor_of
        self.aggregator = StackedAdapters(layout, ranks)
        self._refs: list = []
        self._sent: dict[int, int] = {}
        """Merges each actor has been sent (fresh actors after a resume start at 0)."""

    def broadcast(self, state: "ServerState", selected: Sequence[ClientId]) -> dict[ClientId, Send]:
        import ray

        self._refs += [ray.put(m) for m in state.merges[len(self._refs) :]]
        merges = tuple(self._refs)
        payloads = _rank_payloads(self.layout, state.params, {int(self.ranks[c]) for c in selected})
        self.aggregator.start = {rank: payload for rank, (_, payload) in payloads.items()}
        sends = {}
        for cid in selected:
            ref, payload = payloads[int(self.ranks[cid])]
            actor = self.actor_of(cid)
            new = sum(int(m.nbytes) for m in state.merges[self._sent.get(actor, 0) :])
            self._sent[actor] = len(merges)
            sends[cid] = Send(ref, int(payload.nbytes) + new, int(payload.size), merges)
        return sends

    def apply(self, state: "ServerState", aggregate: np.ndarray, strategy: UpdateTransform) -> None:
        state.merges.append(aggregate)


@ADAPTER_AGGREGATIONS.register("stack")
def stack_exchange(cfg: RunConfig, layout: LoraLayout, ranks: np.ndarray, actor_of: ActorOf) -> Exchange:
    """FLoRA's exact stacking; there is no mean for a server strategy to transform."""
    if cfg.server.strategy.name != "fedavg":
        raise ValueError(
            "model.peft.aggregation=stack folds the exact update into the base weights, so "
            f"there is no server step to transform: server.strategy.name must be fedavg, got "
            f"{cfg.server.strategy.name!r}"
        )
    return StackExchange(layout, ranks, actor_of)
