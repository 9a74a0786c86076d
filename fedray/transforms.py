"""Update transforms: composable, stateful functions applied to an update on its way.

Modelled on optax's GradientTransformation: a transform is a pair of pure
functions `init(params) -> state` and `apply(update, state, params, ctx) ->
(update, state)`. State is returned, never hidden in attributes, so it can be
checkpointed and a resumed run continues identically. `ctx` (`fedray.types.Context`)
says which round and client the update belongs to and hands out generators seeded
from them, so random transforms (noise, random codecs) are reproducible.

The same transforms run in two places: the **client chain** (`clients.transforms`)
on each client's update before it leaves the client, with its state kept per
client id; and the **server chain** (`server.transforms`, then the strategy's
optimizer) on the round's aggregate before it is added to the global weights.
A transform that changes how an update travels (a codec) also has a `decode`,
which the server runs on what it receives before checking and aggregating it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.types import Context

State = Any
Apply = Callable[[np.ndarray, State, np.ndarray, Context], "tuple[np.ndarray, State]"]


class UpdateTransform(NamedTuple):
    """`init(params) -> state`; `apply(update, state, params, ctx) -> (update, state)`;
    `decode(payload, ctx) -> update` for a transform whose output travels encoded."""

    init: Callable[[np.ndarray], State]
    apply: Apply
    decode: Callable[[Any, Context], np.ndarray] | None = None


def stateless(fn: Callable[[np.ndarray, np.ndarray, Context], np.ndarray]) -> UpdateTransform:
    """Lift `fn(update, params, ctx) -> update` into a transform with empty state."""

    def init(params: np.ndarray) -> State:
        return ()

    def apply(update: np.ndarray, state: State, params: np.ndarray, ctx: Context):
        return fn(update, params, ctx), state

    return UpdateTransform(init, apply)


def identity() -> UpdateTransform:
    """Leave the update untouched (plain FedAvg on the server)."""
    return stateless(lambda update, params, ctx: update)


def chain(*transforms: UpdateTransform) -> UpdateTransform:
    """Apply transforms left to right; the state is the tuple of their states. The
    chain's `decode` undoes the encoders among them, last first."""

    def init(params: np.ndarray) -> State:
        return tuple(t.init(params) for t in transforms)

    def apply(update: np.ndarray, state: State, params: np.ndarray, ctx: Context):
        assert len(state) == len(transforms), "state does not match the chain"
        new_state = []
        for t, s in zip(transforms, state):
            update, s = t.apply(update, s, params, ctx)
            new_state.append(s)
        return update, tuple(new_state)

    decoders = [t.decode for t in reversed(transforms) if t.decode is not None]
    if not decoders:
        return UpdateTransform(init, apply)

    def decode(payload: Any, ctx: Context) -> np.ndarray:
        for fn in decoders:
            payload = fn(payload, ctx)
        return payload

    return UpdateTransform(init, apply, decode)


def scale(factor: float) -> UpdateTransform:
    """Multiply the update by a constant (a server learning rate)."""
    return stateless(lambda update, params, ctx: update * np.float32(factor))


def clip_by_global_norm(max_norm: float) -> UpdateTransform:
    """Scale the update down to L2 norm `max_norm` if it is longer (Pascanu et al. 2013;
    the clipping step of DP-FedAvg)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")

    def clip(update: np.ndarray, params: np.ndarray, ctx: Context) -> np.ndarray:
        norm = float(np.sqrt(np.dot(update, update)))
        return update * np.float32(max_norm / norm) if norm > max_norm else update

    return stateless(clip)


class MomentumState(NamedTuple):
    velocity: np.ndarray


def momentum(beta: float) -> UpdateTransform:
    """Heavy-ball server momentum, v <- beta*v + u (FedAvgM, Hsu et al. 2019)."""
    _check_unit("beta", beta)

    def init(params: np.ndarray) -> MomentumState:
        return MomentumState(np.zeros_like(params, dtype=np.float32))

    def apply(update: np.ndarray, state: MomentumState, params: np.ndarray, ctx: Context):
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
    _check_adaptive(lr, beta1, beta2, eps)

    def init(params: np.ndarray) -> AdamState:
        zeros = np.zeros_like(params, dtype=np.float32)
        return AdamState(0, zeros, zeros.copy())

    def apply(update: np.ndarray, state: AdamState, params: np.ndarray, ctx: Context):
        grad = -update
        step = state.step + 1
        m = np.float32(beta1) * state.m + np.float32(1 - beta1) * grad
        v = np.float32(beta2) * state.v + np.float32(1 - beta2) * grad * grad
        m_hat = m / np.float32(1 - beta1**step)
        v_hat = v / np.float32(1 - beta2**step)
        new_update = -np.float32(lr) * m_hat / (np.sqrt(v_hat) + np.float32(eps))
        return new_update.astype(np.float32), AdamState(step, m, v)

    return UpdateTransform(init, apply)


class AdaptiveState(NamedTuple):
    m: np.ndarray
    v: np.ndarray


def _second_moment(rule: str, v: np.ndarray, d2: np.ndarray, beta2: float) -> np.ndarray:
    """v_t of Reddi et al. 2021, Algorithm 2, for the adaptive server optimizers."""
    if rule == "adagrad":
        return v + d2
    # Yogi: v - (1 - beta2) d^2 sign(v - d^2): v grows or shrinks additively towards d^2
    return v - np.float32(1 - beta2) * d2 * np.sign(v - d2)


def _reddi(rule: str, lr: float, beta1: float, beta2: float, tau: float,
           initial_accumulator: float | None) -> UpdateTransform:
    """x <- x + lr m_t / (sqrt(v_t) + tau), m_t = beta1 m + (1 - beta1) d (Algorithm 2 of
    Reddi et al., "Adaptive Federated Optimization", ICLR 2021; no bias correction)."""
    _check_adaptive(lr, beta1, beta2, tau)
    v0 = tau * tau if initial_accumulator is None else initial_accumulator
    if v0 < 0:
        raise ValueError(f"initial_accumulator must be >= 0, got {initial_accumulator}")

    def init(params: np.ndarray) -> AdaptiveState:
        return AdaptiveState(np.zeros_like(params, dtype=np.float32),
                             np.full_like(params, v0, dtype=np.float32))

    def apply(update: np.ndarray, state: AdaptiveState, params: np.ndarray, ctx: Context):
        m = np.float32(beta1) * state.m + np.float32(1 - beta1) * update
        v = _second_moment(rule, state.v, update * update, beta2)
        step = np.float32(lr) * m / (np.sqrt(v) + np.float32(tau))
        return step.astype(np.float32), AdaptiveState(m, v.astype(np.float32))

    return UpdateTransform(init, apply)


def yogi(lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
         initial_accumulator: float | None = None) -> UpdateTransform:
    """FedYogi's server step: Adam with Yogi's additive second moment (Zaheer et al. 2018),
    which reacts to a sudden change of scale without Adam's blow-up. v_{-1} = tau^2
    (the paper's lower bound) unless `initial_accumulator` is given."""
    return _reddi("yogi", lr, beta1, beta2, tau, initial_accumulator)


def adagrad(lr: float, beta1: float = 0.0, tau: float = 1e-3,
            initial_accumulator: float | None = None) -> UpdateTransform:
    """FedAdagrad's server step: v accumulates every squared update; beta1 = 0 is plain
    Adagrad, as in the paper's experiments."""
    return _reddi("adagrad", lr, beta1, 0.0, tau, initial_accumulator)


def _check_unit(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_adaptive(lr: float, beta1: float, beta2: float, eps: float) -> None:
    if not lr > 0 or not np.isfinite(lr):
        raise ValueError(f"server_lr must be a finite number > 0, got {lr}")
    _check_unit("beta1", beta1)
    _check_unit("beta2", beta2)
    if not eps > 0:
        raise ValueError(f"the adaptivity (eps / tau) must be > 0, got {eps}")


TRANSFORMS: Registry[Callable[..., UpdateTransform]] = Registry("update transform", returns=UpdateTransform)
"""Transforms by name for `clients.transforms` and `server.transforms` (`{name, args}`;
`args` are the factory's keyword arguments). Packages that add transforms (codecs,
privacy) register here."""
for _name, _factory in (("clip_by_global_norm", clip_by_global_norm), ("scale", scale),
                        ("momentum", momentum), ("adam", adam), ("yogi", yogi), ("adagrad", adagrad)):
    TRANSFORMS.register(_name)(_factory)
