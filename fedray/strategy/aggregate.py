"""Aggregators: how the round's client updates become one update, and the order they arrive in.

Updates are taken as they arrive (`ray.wait`). Floating-point addition is not
associative, so to make the result independent of arrival order, results are
*released* in the order the clients were selected (sorted by id): an early
arrival is held (as the object-store view it already is) only until its
predecessors are in (`InOrder`). Failed or timed-out clients arrive as `None`
so the ones behind them can go on. Because validation also sees results in this
order, its running statistics are deterministic too.

An aggregator is picked by `server.aggregator` from `AGGREGATORS`. The default,
`weighted_mean`, streams every update into one preallocated buffer, so the server
never holds a list of every client's weights; the robust ones
(`fedray.strategy.robust`) must see all updates of a round at once and keep them.
Every aggregator has explicit state (`init`, and `result` returns the new state),
kept in the checkpoint like a transform's.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from fedray.config.registry import Registry
from fedray.types import ClientId


@runtime_checkable
class Aggregator(Protocol):
    """Combines one round's updates; they arrive in a deterministic order (`InOrder`).

    `reset(state)` starts a round from the state the last `result` returned (or
    `init()`), `add` takes one client's update with its weight (examples, times a
    staleness factor in async mode), `result` returns (aggregate, new state). The
    aggregate may be a view of an internal buffer, valid until the next reset.
    """

    num_added: int

    def init(self) -> Any: ...
    def reset(self, state: Any = ()) -> None: ...
    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None: ...
    def result(self) -> tuple[np.ndarray, Any]: ...


AggregatorFactory = Callable[..., Aggregator]
AGGREGATORS: Registry[AggregatorFactory] = Registry("aggregator", returns=Aggregator)
"""`factory(num_params, **args) -> Aggregator`; `args` come from `server.aggregator.args`."""


class InOrder:
    """Hold arrivals until every client before them in `order` has arrived."""

    def __init__(self) -> None:
        self.reset(())

    def reset(self, order: Sequence[ClientId]) -> None:
        self._order = list(order)
        self._expected = set(self._order)
        self._next = 0
        self._held: dict[ClientId, Any] = {}
        self._seen: set[ClientId] = set()

    def arrive(self, client_id: ClientId, item: Any) -> list[tuple[ClientId, Any]]:
        """Record an arrival (`None` for a client that will contribute nothing);
        returns the (client, item) pairs now released, in order."""
        assert client_id in self._expected, f"client {client_id} was not selected this round"
        assert client_id not in self._seen, f"client {client_id} arrived twice"
        self._seen.add(client_id)
        self._held[client_id] = item
        released = []
        while self._next < len(self._order) and self._order[self._next] in self._held:
            cid = self._order[self._next]
            released.append((cid, self._held.pop(cid)))
            self._next += 1
        return released

    @property
    def num_held(self) -> int:
        return len(self._held)

    @property
    def done(self) -> bool:
        return self._next == len(self._order)


class WeightedMean:
    """sum_i w_i * u_i / sum_i w_i in one preallocated float32 buffer, reused every round."""

    def __init__(self, num_params: int):
        self._sum = np.zeros(num_params, dtype=np.float32)
        self.reset()

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self._sum.fill(0.0)
        self.total_weight = 0.0
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        """Add one client's update (`InOrder` has already fixed the order)."""
        from fedray.models.flat import as_tensor  # torch's axpy; imported where updates are summed

        as_tensor(self._sum).add_(as_tensor(update), alpha=float(weight))
        self.total_weight += float(weight)
        self.num_added += 1

    def result(self) -> tuple[np.ndarray, Any]:
        """The weighted mean (a view of the buffer, valid until the next reset)."""
        if self.total_weight <= 0:
            raise ValueError("no client update to aggregate")
        self._sum *= np.float32(1.0 / self.total_weight)
        return self._sum, ()


class NormBound:
    """Each update clipped to L2 norm `max_norm`, then the weighted mean (Sun et al.
    2019, "Can you really backdoor federated learning?"): a boosted update keeps its
    direction but loses its size. Streams like `WeightedMean`."""

    def __init__(self, num_params: int, max_norm: float):
        self.mean = WeightedMean(num_params)
        self.max_norm = float(max_norm)

    @property
    def num_added(self) -> int:
        return self.mean.num_added

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self.mean.reset()

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        norm = float(np.sqrt(np.dot(update, update)))
        if norm > self.max_norm:
            update = update * np.float32(self.max_norm / norm)
        self.mean.add(client_id, weight, update)

    def result(self) -> tuple[np.ndarray, Any]:
        return self.mean.result()


@AGGREGATORS.register("weighted_mean")
def weighted_mean(num_params: int) -> Aggregator:
    """FedAvg's example-weighted mean, streamed into one buffer."""
    return WeightedMean(num_params)


@AGGREGATORS.register("norm_bound")
def norm_bound(num_params: int, max_norm: float) -> Aggregator:
    """Clip every update to `max_norm`, then the weighted mean."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    return NormBound(num_params, max_norm)
