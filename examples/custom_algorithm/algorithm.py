"""An algorithm of your own, given to fedray by dotted paths in config.yaml.

Three pieces, each a plain function whose keyword arguments are the `args` of its
config entry (checked against the signature before the run starts):

- `clipped_fedavgm`, a server strategy: clip the aggregated update, then server
  momentum (a robust variant of FedAvgM), built from fedray's update transforms;
- `damp_spikes`, a client transform with per-client state: an update longer than
  `limit` x the client's own running mean norm is scaled down to it, so one bad
  local round (a poisoned batch, a too-large step) cannot jolt the global model.
  Its state (rounds seen, mean norm) is kept per client id by the server, so it
  survives checkpoints and actor restarts without any code here;
- `norm_guard`, a server transform with its own state: the aggregate is scaled
  down to `factor` x the running mean norm of the aggregates before it, a second
  line of defence behind the aggregator;
- `geometric_median`, an aggregator: the weighted geometric median by Weiszfeld's
  iterations (RFA, Pillutla et al. 2022), robust to a minority of outliers.

No change to fedray itself. A checkpoint constructs only classes it knows, so a
factory whose state is a class of its own declares it: `damp_spikes.state_types =
(SpikeState,)`. With that, the state is in every checkpoint and `fedray run
--resume RUN_DIR --allow-code examples.custom_algorithm.algorithm` continues exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fedray.strategy.presets import Strategy
from fedray.transforms import UpdateTransform, chain, clip_by_global_norm, momentum, scale
from fedray.types import ClientId, Context


def clipped_fedavgm(server_lr: float = 1.0, momentum_beta: float = 0.9, max_norm: float = 1.0) -> Strategy:
    """FedAvgM on the aggregate clipped to `max_norm`."""
    return Strategy(chain(clip_by_global_norm(max_norm), momentum(momentum_beta), scale(server_lr)))


class SpikeState(NamedTuple):
    rounds: int
    mean_norm: float


def damp_spikes(limit: float = 3.0, warmup: int = 1) -> UpdateTransform:
    """Scale an update down to `limit` x this client's running mean norm (after `warmup` rounds)."""
    if not limit > 1:
        raise ValueError(f"limit must be > 1, got {limit}")

    def init(params: np.ndarray) -> SpikeState:
        return SpikeState(0, 0.0)

    def apply(update: np.ndarray, state: SpikeState, params: np.ndarray, ctx: Context):
        norm = float(np.linalg.norm(update))
        bound = limit * state.mean_norm
        if state.rounds >= warmup and norm > bound > 0:
            update, norm = update * np.float32(bound / norm), bound
        mean = (state.mean_norm * state.rounds + norm) / (state.rounds + 1)
        return update, SpikeState(state.rounds + 1, mean)

    return UpdateTransform(init, apply)


damp_spikes.state_types = (SpikeState,)


class GuardState(NamedTuple):
    rounds: int
    mean_norm: float


def norm_guard(factor: float = 3.0) -> UpdateTransform:
    """Scale the round's aggregate down to `factor` x the running mean norm of earlier ones."""
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor}")

    def init(params: np.ndarray) -> GuardState:
        return GuardState(0, 0.0)

    def apply(update: np.ndarray, state: GuardState, params: np.ndarray, ctx: Context):
        norm = float(np.linalg.norm(update))
        bound = factor * state.mean_norm
        if state.rounds > 0 and norm > bound > 0:
            update, norm = update * np.float32(bound / norm), bound
        return update, GuardState(state.rounds + 1, (state.mean_norm * state.rounds + norm) / (state.rounds + 1))

    return UpdateTransform(init, apply)


norm_guard.state_types = (GuardState,)


class GeometricMedian:
    """Buffers the round's updates; `result` runs Weiszfeld's algorithm from the weighted mean."""

    def __init__(self, num_params: int, iterations: int, eps: float):
        self.iterations, self.eps = iterations, eps
        self.reset()

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self.updates: list[np.ndarray] = []
        self.weights: list[float] = []
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        self.updates.append(update)
        self.weights.append(weight)
        self.num_added += 1

    def result(self) -> tuple[np.ndarray, Any]:
        points = np.stack(self.updates).astype(np.float64)
        alphas = np.asarray(self.weights) / np.sum(self.weights)
        z = alphas @ points
        for _ in range(self.iterations):
            distances = np.maximum(np.linalg.norm(points - z, axis=1), self.eps)
            betas = alphas / distances
            z = betas @ points / betas.sum()
        return z.astype(np.float32), ()


def geometric_median(num_params: int, iterations: int = 4, eps: float = 1e-6) -> GeometricMedian:
    """The weighted geometric median of the updates (smoothed by `eps`)."""
    return GeometricMedian(num_params, iterations, eps)
