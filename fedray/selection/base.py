"""The selector interface and its registry.

A selector is a pair of functions with explicit state, like a transform:
`init(num_clients) -> state` and `select(...) -> (client ids, state)`. The
server passes its own seeded generator, so selection is reproducible and a
checkpoint (which holds the generator's state) resumes it exactly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import SelectionConfig
from fedray.types import ClientId


class SelectionRequest(NamedTuple):
    server_round: int
    available: np.ndarray
    """Ids of the clients that may be selected, sorted."""
    num_clients: int
    """How many to select (at most len(available))."""


class Selector(NamedTuple):
    init: Callable[[int], Any]
    select: Callable[[SelectionRequest, Any, np.random.Generator], tuple[list[ClientId], Any]]


SELECTORS: Registry[Callable[[SelectionConfig], Selector]] = Registry("selector")
