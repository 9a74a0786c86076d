"""Client-level differential privacy as pieces of the algorithm (`server.privacy`).

A mechanism factory (`fixed_clip`, `adaptive_clip`, or a dotted path) takes the
run's `Participation` and its `args`, and returns a `Mechanism`: the clip that
goes first in the client chain, the noise that goes first in the server chain
(before `server.transforms` and the strategy's optimizer), the aggregator that
replaces the weighted mean, and a term whose server half counts the rounds and
reports `dp_epsilon` (cumulative, at `delta`) in metrics.parquet every round.

The noise multiplier is either given, or calibrated before the run from
`target_epsilon` for `server.rounds` rounds. Given both, the run stops cleanly
after the last round the budget allows (`rounds_allowed`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from fedray.config.registry import Registry
from fedray.privacy import accountant as accounting
from fedray.privacy.accountant import Sampling
from fedray.privacy.clip import (
    ClipState, adaptive_clip_term, clip_broadcast, clip_fixed, fixed_clip_term, round_clip_norm,
)
from fedray.privacy.noise import FixedDenominatorMean, gaussian_noise
from fedray.strategy.terms import Term
from fedray.transforms import UpdateTransform
from fedray.types import Context

METHODS = ("rdp", "prv")


class Participation(NamedTuple):
    """What a mechanism needs to know of the run."""

    sampling: Sampling
    rounds: int
    """`server.rounds`: the planned rounds, for calibration."""
    account: bool = True
    """False on a client: it only clips, so the accountant is not consulted."""


class Mechanism(NamedTuple):
    """Client-level DP in the algorithm (module docstring)."""

    clip: UpdateTransform
    noise: UpdateTransform
    term: Term
    aggregator: Callable[[int], Any]
    """A fresh `FixedDenominatorMean` for updates of `num_params` floats."""
    noise_multiplier: float
    """z, as the accountant sees it (the update's and, with adaptive clipping, the count's together)."""
    delta: float
    sampling: Sampling
    method: str
    rounds_allowed: int
    """Rounds the budget allows: `server.rounds`, or fewer with a `target_epsilon` and a given z."""

    def epsilon(self, rounds: int) -> float:
        return accounting.epsilon(self.noise_multiplier, self.sampling, rounds, self.delta, self.method)


PRIVACY: Registry[Callable[..., Mechanism]] = Registry("privacy mechanism", returns=Mechanism)
"""`factory(participation, **args) -> Mechanism`, for `server.privacy`."""


class Budget(NamedTuple):
    noise_multiplier: float
    delta: float
    method: str
    rounds_allowed: int


def plan_budget(run: Participation, noise_multiplier: float | None, target_epsilon: float | None,
                delta: float | None, method: str) -> Budget:
    """Check the privacy arguments; calibrate z, or count the rounds the budget allows."""
    if method not in METHODS:
        raise ValueError(f"accountant must be one of {list(METHODS)}, got {method!r}")
    if method == "prv" and run.sampling.kind != "poisson":
        raise ValueError("accountant 'prv' applies to Poisson sampling only (server.selection.name: poisson)")
    delta = 1.0 / run.sampling.num_clients ** 1.1 if delta is None else delta
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if noise_multiplier is None and target_epsilon is None:
        raise ValueError("give noise_multiplier or target_epsilon (or both)")
    if noise_multiplier is not None and noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if target_epsilon is not None and not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    if not run.account:
        return Budget(noise_multiplier or 0.0, delta, method, run.rounds)
    if noise_multiplier is None:
        z = accounting.calibrate(target_epsilon, run.sampling, run.rounds, delta, method)
        return Budget(z, delta, method, run.rounds)
    rounds = run.rounds
    if target_epsilon is not None:
        rounds = accounting.rounds_within(target_epsilon, noise_multiplier, run.sampling, run.rounds, delta, method)
        if rounds == 0:
            first = accounting.epsilon(noise_multiplier, run.sampling, 1, delta, method)
            raise ValueError(f"target_epsilon={target_epsilon:g} cannot be met: one round with noise_multiplier="
                             f"{noise_multiplier:g} already spends epsilon={first:.3g} at delta={delta:g}")
    return Budget(float(noise_multiplier), delta, method, rounds)


def _accounted(term: Term, budget: Budget, sampling: Sampling) -> Term:
    """The term, whose `absorb` also reports the cumulative epsilon after the round."""

    def absorb(state: ClipState, combined: dict, ctx: Context):
        state, metrics = term.absorb(state, combined, ctx)
        eps = accounting.epsilon(budget.noise_multiplier, sampling, state.rounds, budget.delta, budget.method)
        return state, {**metrics, "dp_epsilon": eps, "dp_delta": budget.delta}

    return term._replace(absorb=absorb)


def _check_clip(name: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


@PRIVACY.register("fixed_clip")
def fixed_clip(run: Participation, clip_norm: float, noise_multiplier: float | None = None,
               target_epsilon: float | None = None, delta: float | None = None,
               accountant: str = "rdp") -> Mechanism:
    """DP-FedAvg with a fixed clip norm C: noise std z C / K on the mean."""
    _check_clip("clip_norm", clip_norm)
    budget = plan_budget(run, noise_multiplier, target_epsilon, delta, accountant)
    k = run.sampling.expected_clients
    return Mechanism(
        clip=clip_fixed(clip_norm),
        noise=gaussian_noise(budget.noise_multiplier, k, lambda ctx: clip_norm),
        term=_accounted(fixed_clip_term(clip_norm), budget, run.sampling),
        aggregator=lambda num_params: FixedDenominatorMean(num_params, k),
        noise_multiplier=budget.noise_multiplier, delta=budget.delta, sampling=run.sampling,
        method=budget.method, rounds_allowed=budget.rounds_allowed)


@PRIVACY.register("adaptive_clip")
def adaptive_clip(run: Participation, initial_clip_norm: float = 1.0, target_quantile: float = 0.5,
                  learning_rate: float = 0.2, noise_multiplier: float | None = None,
                  target_epsilon: float | None = None, delta: float | None = None,
                  count_stddev: float | None = None, accountant: str = "rdp") -> Mechanism:
    """DP-FedAvg whose clip norm follows the `target_quantile` of the update norms
    (Andrew et al. 2021). The noise is split: with z the total noise multiplier and
    sigma_b = `count_stddev` (default K / 20, the paper's choice) on the count, the
    update gets z_u = (z^-2 - (2 sigma_b)^-2)^(-1/2), so that both releases together
    are the Gaussian mechanism with multiplier z (the paper's Theorem 1)."""
    _check_clip("initial_clip_norm", initial_clip_norm)
    if not 0 < target_quantile < 1:
        raise ValueError(f"target_quantile must be in (0, 1), got {target_quantile}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    budget = plan_budget(run, noise_multiplier, target_epsilon, delta, accountant)
    k = run.sampling.expected_clients
    sigma_b = k / 20 if count_stddev is None else count_stddev
    z = budget.noise_multiplier
    if sigma_b < 0:
        raise ValueError(f"count_stddev must be >= 0, got {count_stddev}")
    if z > 0 and not z < 2 * sigma_b:
        raise ValueError(f"the noise multiplier {z:.4g} must be below 2 x count_stddev = {2 * sigma_b:.4g}: the "
                         "count's noise takes part of the budget (Andrew et al. 2021); raise count_stddev")
    z_update = 0.0 if z == 0 else (z ** -2 - (2 * sigma_b) ** -2) ** -0.5
    term = adaptive_clip_term(initial_clip_norm, target_quantile, learning_rate, sigma_b if z > 0 else 0.0, k)
    return Mechanism(
        clip=clip_broadcast(),
        noise=gaussian_noise(z_update, k, round_clip_norm),
        term=_accounted(term, budget, run.sampling),
        aggregator=lambda num_params: FixedDenominatorMean(num_params, k),
        noise_multiplier=z, delta=budget.delta, sampling=run.sampling,
        method=budget.method, rounds_allowed=budget.rounds_allowed)
