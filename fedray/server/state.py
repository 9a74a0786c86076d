"""Everything the server must remember between rounds, as plain checkpointable data."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class ServerState:
    server_round: int
    """The last completed round (0 before the first)."""
    params: np.ndarray
    """The global model's travelling parameters, flat float32."""
    strategy_state: Any
    selector_state: Any
    rng_state: dict
    """`np.random.Generator.bit_generator.state` of the server's generator."""
    merges: list[np.ndarray] = dataclasses.field(default_factory=list)
    """Exact low-rank updates folded into the frozen base weights, one stacked LoRA
    adapter per round (`model.peft.aggregation: stack`); empty otherwise."""
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    """Seconds spent in rounds so far (carried across a resume)."""
