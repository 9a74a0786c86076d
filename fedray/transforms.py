"""Update transforms: composable, stateful functions applied to an aggregated update.

Modelled on optax's GradientTransformation: a transform is a pair of pure
functions `init(params) -> state` and `apply(update, state, params) -> (update,
state)`. State is returned, never hidden in attributes, so it can be checkpointed
and a resumed run continues identically. Named server strategies (FedAvgM,
FedAdam, ...) are just chains of these.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

State = Any


class UpdateTransform(NamedTuple):
    """`init(params) -> state`; `apply(update, state, params) -> (update, state)`."""

    init: Callable[[np.ndarray], State]
    apply: Callable[[np.ndarray, State, np.ndarray], tuple[np.ndarray, State]]


def stateless(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> UpdateTransform:
    """Lift `fn(update, params) -> update` into a transform with empty state."""

    def init(params: np.ndarray) -> State:
        return ()

    def apply(update: np.ndarray, state: State, params: np.ndarray):
        return fn(update, params), state

    return UpdateTransform(init, apply)


def identity() -> UpdateTransform:
    """Leave the update untouched (plain FedAvg on the server)."""
    return stateless(lambda update, params: update)


def chain(*transforms: UpdateTransform) -> UpdateTransform:
    """Apply transforms left to right; the state is the tuple of their states."""

    def init(params: np.ndarray) -> State:
        return tuple(t.init(params) for t in transforms)

    def apply(update: np.ndarray, state: State, params: np.ndarray):
        assert len(state) == len(transforms), "state does not match the chain"
        new_state = []
        for t, s in zip(transforms, state):
            update, s = t.apply(update, s, params)
            new_state.append(s)
        return update, tuple(new_state)

    return UpdateTransform(init, apply)


def scale(factor: float) -> UpdateTransform:
    """Multiply the update by a constant (a server learning rate)."""
    return stateless(lambda update, params: update * np.float32(factor))


def clip_by_global_norm(max_norm: float) -> UpdateTransform:
    """Scale the update down to L2 norm `max_norm` if it is longer (Pascanu et al. 2013;
    the clipping step of DP-FedAvg)."""

    def clip(update: np.ndarray, params: np.ndarray) -> np.ndarray:
        norm = float(np.sqrt(np.dot(update, update)))
        return update * np.float32(max_norm / norm) if norm > max_norm else update

    return stateless(clip)


class MomentumState(NamedTuple):
    velocity: np.ndarray


def momentum(beta: float) -> UpdateTransform:
    """Heavy-ball server momentum, v <- beta*v + u (FedAvgM, Hsu et al. 2019)."""

    def init(params: np.ndarray) -> MomentumState:
        return MomentumState(np.zeros_like(params, dtype=np.float32))

    def apply(update: np.ndarray, state: MomentumState, params: np.ndarray):
        velocity = np.float32(beta) * state.velocity + update
        return velocity, MomentumState(velocity)

    return UpdateTransform(init, apply)


class AdamState(NamedTuple):
    step: int
    m: np.ndarray
    v: np.ndarray


def adam(lr: float, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-3) -> UpdateTransform:
    """Server Adam on the pseudo-gradient -update (FedAdam, Reddi et al. 2021).

    The aggregated delta points downhill, so it is treated as a negative gradient;
    bias correction follows torch.optim.Adam so the two agree step for step.
    """

    def init(params: np.ndarray) -> AdamState:
        zeros = np.zeros_like(params, dtype=np.float32)
        return AdamState(0, zeros, zeros.copy())

    def apply(update: np.ndarray, state: AdamState, params: np.ndarray):
        grad = -update
        step = state.step + 1
        m = np.float32(beta1) * state.m + np.float32(1 - beta1) * grad
        v = np.float32(beta2) * state.v + np.float32(1 - beta2) * grad * grad
        m_hat = m / np.float32(1 - beta1**step)
        v_hat = v / np.float32(1 - beta2**step)
        new_update = -np.float32(lr) * m_hat / (np.sqrt(v_hat) + np.float32(eps))
        return new_update.astype(np.float32), AdamState(step, m, v)

    return UpdateTransform(init, apply)
