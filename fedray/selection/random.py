"""Uniform sampling without replacement, as in FedAvg."""

from __future__ import annotations

from fedray.config.schema import SelectionConfig
from fedray.selection.base import SELECTORS, Selector, SelectionRequest


@SELECTORS.register("random")
def random_selector(cfg: SelectionConfig) -> Selector:
    def init(num_clients: int):
        return ()

    def select(request: SelectionRequest, state, rng):
        k = min(request.num_clients, len(request.available))
        chosen = rng.choice(request.available, size=k, replace=False)
        return [int(c) for c in chosen], state

    return Selector(init, select)
