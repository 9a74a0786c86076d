"""Over-commitment against stragglers (Bonawitz et al., "Towards Federated Learning at
Scale: System Design", MLSys 2019).

Select `ceil((1 + overcommit) x K)` clients uniformly at random; the round
aggregates the first K to finish on the simulated clock and drops the rest
(in `server.mode: async` nothing waits for a round, so over-commitment is
capped at the free slots). The first-K rule lives in the round
(`fedray.hetero.simulation.admit`), which applies it to any selector that
returns more than K clients.
"""

from __future__ import annotations

import numpy as np

from fedray.config.schema import SelectionConfig
from fedray.selection.base import SELECTORS, Selector, SelectionRequest, scaled


@SELECTORS.register("deadline")
def deadline(cfg: SelectionConfig) -> Selector:
    overcommit = cfg.deadline.overcommit

    def init(num_clients: int):
        return ()

    def select(request: SelectionRequest, state, rng: np.random.Generator):
        n = min(len(request.available), scaled(1.0 + overcommit, request.num_clients))
        chosen = rng.choice(request.available, size=n, replace=False)
        return [int(c) for c in chosen], state

    return Selector(init, select)
