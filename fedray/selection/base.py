"""The selector interface and its registry.

A selector is a pair of functions with explicit state, like a transform:
`init(num_clients) -> state` and `select(request, state, rng) -> (client ids,
state)`. The server passes its own seeded generator, so selection is
reproducible and a checkpoint (which holds the generator's state) resumes it
exactly. What a selector knows of the clients comes in the request
(`profiles`); everything it remembers itself is in its returned state.

A selector may return more than `num_clients` ids (over-commitment): the round
then aggregates the first `num_clients` to finish on the simulated clock.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import SelectionConfig
from fedray.selection.profiles import ClientProfiles
from fedray.types import ClientId


class SelectionRequest(NamedTuple):
    server_round: int
    available: np.ndarray
    """Ids of the clients that may be selected, sorted: their actor is up, they are
    online on the simulated clock, not busy (async) and not given up on."""
    num_clients: int
    """How many results the round aggregates (at most len(available) are selectable)."""
    profiles: ClientProfiles | None = None
    """What the server has measured of every client (None: nothing)."""
    sim_time_s: float = 0.0
    """The server's simulated clock at the start of the round."""


class Selector(NamedTuple):
    init: Callable[[int], Any]
    select: Callable[[SelectionRequest, Any, np.random.Generator], tuple[list[ClientId], Any]]
    keep_all: bool = False
    """Every selected client's result counts, however many were selected (Poisson
    sampling); otherwise more than `num_clients` ids is over-commitment."""


SELECTORS: Registry[Callable[[SelectionConfig], Selector]] = Registry("selector", returns=Selector)


def require_profiles(request: SelectionRequest, name: str) -> ClientProfiles:
    """The request's profiles; selectors that score clients cannot work without them."""
    assert request.profiles is not None, f"the {name} selector needs client profiles"
    return request.profiles


def scaled(factor: float, k: int) -> int:
    """ceil(factor x k), immune to float noise (1.3 x 10 is 13, not 14)."""
    return int(math.ceil(round(factor * k, 9)))


def draw_candidates(request: SelectionRequest, factor: float, rng: np.random.Generator,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(candidates, k): ceil(factor x k) available clients drawn without replacement
    (with probability proportional to `weights` over `available`, if given), in draw
    order, and k = how many to keep of them."""
    available = request.available
    k = min(request.num_clients, len(available))
    p = None if weights is None else weights / weights.sum()
    return rng.choice(available, size=min(len(available), scaled(factor, k)), replace=False, p=p), k
