"""What each selected client is sent, and how the replies become the new global state.

The core case is `FlatExchange`: one flat vector enters the object store once per
round and every client gets the same reference; updates are averaged
(`WeightedMean`) and the strategy's transform chain turns the mean into a step.
LoRA variants with per-client ranks or exact stacking live in
`fedray.strategy.lora` behind the same three members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Sequence

import numpy as np

from fedray.strategy.aggregate import WeightedMean
from fedray.transforms import UpdateTransform
from fedray.types import ClientId

if TYPE_CHECKING:
    from fedray.server.state import ServerState


class Send(NamedTuple):
    """One client's share of the broadcast."""

    params: Any
    """ObjectRef of the flat float32 parameters in this client's layout."""
    num_bytes: int
    """Bytes this client downloads this round (parameters and anything else sent)."""
    update_size: int
    """Length of the flat update expected back."""
    merges: tuple = ()
    """ObjectRefs of exact low-rank updates to fold into the base weights (FLoRA)."""


class Aggregator(Protocol):
    """Streaming combination of the round's updates (see `WeightedMean`). Updates
    arrive in a deterministic order, fixed beforehand by `InOrder`."""

    num_added: int

    def reset(self) -> None: ...
    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None: ...
    def result(self) -> np.ndarray: ...


class Exchange(Protocol):
    """The server's side of the wire: broadcast, an aggregator, and how to apply its result."""

    aggregator: Aggregator

    def broadcast(self, state: "ServerState", selected: Sequence[ClientId]) -> dict[ClientId, Send]:
        """Put what the selected clients need into the object store (each distinct
        payload once) and say what each one gets."""

    def apply(self, state: "ServerState", aggregate: np.ndarray, strategy: UpdateTransform) -> None:
        """Fold the round's aggregate into `state`."""


def apply_transform(state: "ServerState", aggregate: np.ndarray, strategy: UpdateTransform) -> None:
    """The strategy's chain turns the mean delta into a step on the global parameters."""
    step, state.strategy_state = strategy.apply(aggregate, state.strategy_state, state.params)
    state.params += step


class FlatExchange:
    """Everyone gets the same flat vector, put into the object store once per round."""

    def __init__(self, num_params: int):
        self.aggregator = WeightedMean(num_params)

    def broadcast(self, state: "ServerState", selected: Sequence[ClientId]) -> dict[ClientId, Send]:
        import ray

        send = Send(ray.put(state.params), int(state.params.nbytes), int(state.params.size))
        return {cid: send for cid in selected}

    apply = staticmethod(apply_transform)
