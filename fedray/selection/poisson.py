"""Poisson sampling: each available client joins the round independently with
probability q = clients_per_round / num_clients.

The round's size is random (K on average), and every selected client's result
counts: this is the sampling that the sampled Gaussian mechanism's privacy bound
assumes (`fedray.privacy.accountant`), which fixed-size sampling does not match.
"""

from __future__ import annotations

from fedray.config.schema import SelectionConfig
from fedray.selection.base import SELECTORS, Selector, SelectionRequest


@SELECTORS.register("poisson")
def poisson_selector(cfg: SelectionConfig) -> Selector:
    def init(num_clients: int) -> int:
        return num_clients

    def select(request: SelectionRequest, num_clients: int, rng):
        rate = min(1.0, request.num_clients / num_clients)
        joined = rng.random(len(request.available)) < rate
        return [int(c) for c in request.available[joined]], num_clients

    return Selector(init, select, keep_all=True)
