"""Everything the server must remember between rounds, as plain checkpointable data."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fedray.selection.profiles import ClientProfiles


@dataclasses.dataclass
class ServerState:
    server_round: int
    """The last completed round (0 before the first)."""
    params: np.ndarray
    """The global model's travelling parameters, flat float32."""
    transform_state: Any
    """State of the server chain (`server.transforms`, then the strategy's step)."""
    selector_state: Any
    rng_state: dict
    """`np.random.Generator.bit_generator.state` of the server's generator."""
    aggregator_state: Any = ()
    """State the aggregator carries between rounds (e.g. centered clipping's centre)."""
    term_states: tuple = ()
    """Server halves of the objective terms (e.g. SCAFFOLD's global control variate)."""
    merges: list[np.ndarray] = dataclasses.field(default_factory=list)
    """Exact low-rank updates folded into the frozen base weights, one stacked LoRA
    adapter per round (`model.peft.aggregation: stack`); empty otherwise."""
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    norm_history: list[float] = dataclasses.field(default_factory=list)
    """L2 norms of recently accepted updates: the reference of the norm check."""
    client_refs: dict[int, Any] = dataclasses.field(default_factory=dict)
    """Per client with kept state, the round that committed its current state and the
    state's digest (`fedray.types.StateRef`). The state itself stays in the client's
    store (`clients.state_dir`); the server never holds it."""
    wall_s: float = 0.0
    """Seconds spent in rounds so far (carried across a resume)."""
    profiles: ClientProfiles | None = None
    """What the server has measured of each client (clients.parquet)."""
    sim_time_s: float = 0.0
    """The simulated clock: seconds of simulated client time since the run began."""
    in_flight: list[Any] = dataclasses.field(default_factory=list)
    """`async` mode: clients still training (`fedray.server.buffered.InFlight`), their
    results already computed, so a checkpoint resumes them exactly."""
    distiller_rng: dict | None = None
    """The foundation model's distiller's generator state (its public minibatches)."""
    contributions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per round and aggregated client, its update's value (`server.contribution`):
    contributions.parquet's rows, cumulated into clients.parquet."""
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per round, evaluating client and model (`global`, `personal`, ...), its held-out
    metrics (`server.evaluation.where: clients`): evaluation.parquet's rows."""
