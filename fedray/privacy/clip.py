"""Clipping of client updates for client-level DP: to a fixed norm, or to a norm that
tracks a quantile of the update norms (adaptive clipping, Andrew et al. 2021).

Adaptive clipping keeps the clip norm C in the server state and broadcasts it
each round (`dp_clip_norm`). Every client clips its update to C and reports one
bit, b_i = 1 if its update was *not* clipped (||u_i|| <= C). The server adds
Gaussian noise to the count of those bits (it is released too), estimates the
unclipped fraction b = (sum_i b_i + N(0, sigma_b^2)) / K and moves the norm
geometrically, C <- C exp(-eta (b - gamma)): too many unclipped updates shrink
C, too few grow it, so C settles where a fraction gamma of the updates is
below it. Counting *clipped* updates in the same formula would push C the wrong
way, towards zero.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from fedray.strategy.terms import LocalRound, Term, UniformMean
from fedray.transforms import UpdateTransform, clip_by_global_norm, stateless
from fedray.types import Context

CLIP_NORM = "dp_clip_norm"
"""The broadcast payload holding the round's clip norm (one float32)."""
UNCLIPPED = "dp_unclipped"
"""The uplink payload: 1.0 if the client's update was within the clip norm, else 0.0."""
_COUNT_NOISE_TAG = 0xC0C0


def round_clip_norm(ctx: Context) -> float:
    """The clip norm broadcast this round (on a client: what it received; on the server:
    what it sent)."""
    assert CLIP_NORM in ctx.downlink, "adaptive clipping's clip norm was not broadcast this round"
    return float(np.asarray(ctx.downlink[CLIP_NORM])[0])


def clip_fixed(clip_norm: float) -> UpdateTransform:
    """Scale each update down to L2 norm `clip_norm` if it is longer."""
    return clip_by_global_norm(clip_norm)


def clip_broadcast() -> UpdateTransform:
    """Scale each update down to the round's broadcast clip norm if it is longer."""

    def clip(update: np.ndarray, params: np.ndarray, ctx: Context) -> np.ndarray:
        limit = round_clip_norm(ctx)
        norm = float(np.sqrt(np.dot(update, update)))
        return update * np.float32(limit / norm) if norm > limit else update

    return stateless(clip)


class ClipState(NamedTuple):
    """The server half of adaptive clipping (and of the accountant's round count)."""

    rounds: int
    """Rounds released so far (each spends privacy budget)."""
    clip_norm: float
    """C for the next round."""


def adaptive_clip_term(initial_clip_norm: float, target_quantile: float, learning_rate: float,
                       count_stddev: float, denominator: float) -> Term:
    """The term that broadcasts C, collects the unclipped bits and moves C (module docstring).
    Its `absorb` returns the server state; accounting is added by the mechanism."""

    def finish(local: LocalRound, state: Any):
        norm = float(np.sqrt(np.dot(local.delta, local.delta)))
        limit = float(np.asarray(local.payloads[CLIP_NORM])[0])
        return {UNCLIPPED: np.array([1.0 if norm <= limit else 0.0], dtype=np.float32)}, state

    def absorb(state: ClipState, combined: dict, ctx: Context):
        count = float(combined[UNCLIPPED][0]) * ctx.num_aggregated if UNCLIPPED in combined else 0.0
        noisy = count + float(ctx.rng(_COUNT_NOISE_TAG).normal(0.0, count_stddev)) if count_stddev else count
        fraction = noisy / denominator
        new_norm = state.clip_norm * math.exp(-learning_rate * (fraction - target_quantile))
        return ClipState(state.rounds + 1, new_norm), {"dp_clip_norm": state.clip_norm,
                                                       "dp_unclipped_fraction": fraction}

    return Term(finish=finish,
                init_server=lambda params: ClipState(0, float(initial_clip_norm)),
                downlink=lambda state, ctx: {CLIP_NORM: np.array([state.clip_norm], dtype=np.float32)},
                reducers=lambda num_params: {UNCLIPPED: UniformMean(1)},
                absorb=absorb)


def fixed_clip_term(clip_norm: float) -> Term:
    """The server half of fixed clipping: nothing moves, only rounds are counted."""

    def absorb(state: ClipState, combined: dict, ctx: Context):
        return ClipState(state.rounds + 1, state.clip_norm), {}

    return Term(init_server=lambda params: ClipState(0, float(clip_norm)), absorb=absorb)
