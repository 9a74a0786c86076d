"""Streaming aggregation: results released in a fixed order, summed into one buffer.

Updates are taken as they arrive (`ray.wait`), so the server never holds a list
of every client's weights. Floating-point addition is not associative, so to
make the result independent of arrival order, results are *released* in the
order the clients were selected (sorted by id): an early arrival is held (as the
object-store view it already is) only until its predecessors are in. Failed or
timed-out clients arrive as `None` so the ones behind them can go on. Because
validation also sees results in this order, its running statistics are
deterministic too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedray.models.flat import as_tensor
from fedray.types import ClientId


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

    def reset(self) -> None:
        self._sum.fill(0.0)
        self.total_weight = 0.0
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        """Add one client's update (`InOrder` has already fixed the order)."""
        as_tensor(self._sum).add_(as_tensor(update), alpha=float(weight))
        self.total_weight += float(weight)
        self.num_added += 1

    def result(self) -> np.ndarray:
        """The weighted mean (a view of the buffer, valid until the next reset)."""
        if self.total_weight <= 0:
            raise ValueError("no client update to aggregate")
        self._sum *= np.float32(1.0 / self.total_weight)
        return self._sum
