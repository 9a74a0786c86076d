"""What each selected client is sent, and what the server does with the round's aggregate.

The core case is `FlatExchange`: one flat vector is broadcast once per round (`put`,
the transport's) and every client gets the same handle; the aggregator's result is a step
for the server chain. LoRA variants with per-client ranks or exact stacking live in
`fedray.strategy.lora` behind the same members. Exchanges never touch the server
state: they are given the global parameters and merges, and say what to do.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Sequence

import numpy as np

from fedray.strategy.aggregate import Aggregator
from fedray.types import ClientId, payload_bytes

Put = Callable[[np.ndarray], "tuple[Any, int]"]
"""Broadcasts one payload through the round's transport: (handle, bytes on the wire).
The transport's `put` sends the array as it is; a broadcast codec (`server.codec`)
encodes first."""


class Send(NamedTuple):
    """One client's share of the broadcast."""

    refs: dict[str, Any]
    """Payload name -> ObjectRef, `params` (the parameters in this client's layout) first."""
    num_bytes: int
    """Bytes this client downloads this round (every payload it is sent)."""
    merges: tuple = ()
    """ObjectRefs of exact low-rank updates to fold into the base weights (FLoRA)."""


class Fold(NamedTuple):
    """What the round's aggregate becomes: a `step` that goes through the server chain
    and is added to the global parameters, or an exact `merge` folded into the base."""

    step: np.ndarray | None = None
    merge: np.ndarray | None = None


class Exchange(Protocol):
    """The server's side of the wire: broadcast, an aggregator, and how to use its result."""

    aggregator: Aggregator

    def broadcast(self, params: np.ndarray, merges: Sequence[np.ndarray],
                  selected: Sequence[ClientId], put: Put, store: Put | None = None) -> dict[ClientId, Send]:
        """Broadcast what the selected clients need (each distinct payload once, through
        `put`; exact merges, never encoded, through `store`, default `put`) and say what
        each one gets."""

    def update_size(self, client_id: ClientId) -> int:
        """Length of the flat update `client_id` returns."""

    def fold(self, aggregate: np.ndarray, scale: float = 1.0) -> Fold:
        """What the aggregate becomes, its effect scaled by `scale` (FedBuff's staleness
        discount in async mode)."""


class FlatExchange:
    """Everyone gets the same flat vector, broadcast once per round."""

    def __init__(self, num_params: int, aggregator: Aggregator):
        self.num_params = num_params
        self.aggregator = aggregator

    def broadcast(self, params: np.ndarray, merges: Sequence[np.ndarray],
                  selected: Sequence[ClientId], put: Put, store: Put | None = None) -> dict[ClientId, Send]:
        ref, num_bytes = put(params)
        send = Send({"params": ref}, num_bytes)
        return {cid: send for cid in selected}

    def update_size(self, client_id: ClientId) -> int:
        return self.num_params

    def fold(self, aggregate: np.ndarray, scale: float = 1.0) -> Fold:
        return Fold(step=scaled(aggregate, scale))


def scaled(update: np.ndarray, scale: float) -> np.ndarray:
    """`update * scale` (the same array when scale is 1)."""
    return update if scale == 1.0 else update * np.float32(scale)
