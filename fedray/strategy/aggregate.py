"""Streaming, order-fixed weighted mean of client updates into one preallocated buffer.

Updates are added as they arrive (`ray.wait`), so the server never holds a list
of every client's weights. Floating-point addition is not associative, so to
make the result independent of arrival order, updates are summed in the order
the clients were selected: an update that arrives early is held (as the
object-store view it already is) only until its predecessors are in. Failed
or timed-out clients are `skip`ped so the ones behind them can go on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedray.models.flat import as_tensor
from fedray.types import ClientId


class WeightedMean:
    """sum_i w_i * u_i / sum_i w_i, accumulated in a fixed client order."""

    def __init__(self, num_params: int):
        self._sum = np.zeros(num_params, dtype=np.float32)
        self.reset(())

    def reset(self, order: Sequence[ClientId]) -> None:
        """Start a round whose updates will be summed in `order`."""
        self._sum.fill(0.0)
        self._order = list(order)
        self._position = {cid: i for i, cid in enumerate(self._order)}
        self._next = 0
        self._held: dict[ClientId, tuple[float, np.ndarray] | None] = {}
        self._seen: set[ClientId] = set()
        self.total_weight = 0.0
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        self._arrive(client_id, (float(weight), update))

    def skip(self, client_id: ClientId) -> None:
        """The client will contribute nothing this round (failed, late or rejected)."""
        self._arrive(client_id, None)

    @property
    def num_held(self) -> int:
        return len(self._held)

    def result(self) -> np.ndarray:
        """The weighted mean; every client in the order must have been added or skipped."""
        assert self._next == len(self._order), "some selected clients were never resolved"
        if self.total_weight <= 0:
            raise ValueError("no client update to aggregate")
        self._sum *= np.float32(1.0 / self.total_weight)
        return self._sum

    def _arrive(self, client_id: ClientId, entry: tuple[float, np.ndarray] | None) -> None:
        assert client_id in self._position, f"client {client_id} was not selected this round"
        assert client_id not in self._seen, f"client {client_id} arrived twice"
        self._seen.add(client_id)
        self._held[client_id] = entry
        while self._next < len(self._order) and self._order[self._next] in self._held:
            ready = self._held.pop(self._order[self._next])
            self._next += 1
            if ready is not None:
                weight, update = ready
                as_tensor(self._sum).add_(as_tensor(update), alpha=weight)
                self.total_weight += weight
                self.num_added += 1
