"""Privacy accounting: the (epsilon, delta) that a run's noise and sampling give, from
established implementations, never from a formula written here.

The bound must match how clients are really sampled:

- `poisson`: each client joins a round independently with probability q. The
  sampled Gaussian mechanism's RDP bound (Mironov et al. 2019) holds; Opacus's
  `RDPAccountant` computes it (and `PRVAccountant`, the tighter numerical
  composition of Gopi et al. 2021, when asked for `prv`).
- `without_replacement`: exactly K of N clients (the `random` selector). The
  Poisson bound does not hold; Google's `dp-accounting` RDP accountant has the
  analysis for sampling without replacement (Wang et al. 2019), under the
  replace-one relation (one client's data swapped for another's).

Any other selector picks clients by what they reported, so no epsilon is claimed
for it (the configuration is refused).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import numpy as np

MAX_NOISE_MULTIPLIER = 1000.0
"""Calibration gives up above this: the noise would swamp any update."""


class Sampling(NamedTuple):
    """How clients enter a round, as the accountant needs it."""

    kind: str
    """`poisson` or `without_replacement`."""
    num_clients: int
    """N, the federation's size."""
    expected_clients: int
    """K: clients per round (the expectation, with Poisson sampling)."""

    @property
    def rate(self) -> float:
        return self.expected_clients / self.num_clients


def epsilon(noise_multiplier: float, sampling: Sampling, rounds: int, delta: float, method: str = "rdp") -> float:
    """Cumulative epsilon at `delta` after `rounds` rounds of the sampled Gaussian mechanism."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    if sampling.kind == "poisson":
        return _opacus_epsilon(noise_multiplier, sampling.rate, rounds, delta, method)
    assert method == "rdp", "sampling without replacement is accounted with RDP only"
    return _without_replacement_epsilon(noise_multiplier, sampling, rounds, delta)


def _opacus_epsilon(noise_multiplier: float, rate: float, steps: int, delta: float, method: str) -> float:
    if method == "prv":
        from opacus.accountants import PRVAccountant

        accountant = PRVAccountant()
        accountant.history = [(noise_multiplier, rate, steps)]
        return float(accountant.get_epsilon(delta))
    from opacus.accountants.analysis.rdp import get_privacy_spent

    orders, per_step = _poisson_rdp(noise_multiplier, rate)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound holds, if loosely
        warnings.simplefilter("ignore", UserWarning)
        return float(get_privacy_spent(orders=orders, rdp=per_step * steps, delta=delta)[0])


@functools.lru_cache(maxsize=64)
def _poisson_rdp(noise_multiplier: float, rate: float):
    """(orders, RDP of one step): what Opacus's `RDPAccountant` composes, computed once
    per setting (RDP adds up over steps, so T steps are T times this)."""
    import logging

    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    # Opacus warns about every fractional order whose series it cannot sum (low noise);
    # it leaves those orders out, which only loosens the bound.
    logging.getLogger("opacus").setLevel(logging.ERROR)
    orders = RDPAccountant.DEFAULT_ALPHAS
    return orders, np.asarray(compute_rdp(q=rate, noise_multiplier=noise_multiplier, steps=1, orders=orders))


def _without_replacement_epsilon(noise_multiplier: float, sampling: Sampling, rounds: int, delta: float) -> float:
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    orders, per_round = _without_replacement_rdp(noise_multiplier, sampling.num_clients, sampling.expected_clients)
    return float(compute_epsilon(orders, per_round * rounds, delta)[0])


@functools.lru_cache(maxsize=64)
def _without_replacement_rdp(noise_multiplier: float, num_clients: int, sample_size: int):
    """(orders, RDP of one round) from dp-accounting's RDP accountant, once per setting."""
    import dp_accounting
    from dp_accounting import rdp

    event = dp_accounting.SampledWithoutReplacementDpEvent(
        num_clients, sample_size, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(event, 1)
    # the accountant keeps its composed RDP curve in `_rdp` (no public getter); one
    # round's curve times T is T rounds', exactly what compose(event, T) computes
    return np.asarray(accountant._orders), np.asarray(accountant._rdp)


def calibrate(target_epsilon: float, sampling: Sampling, rounds: int, delta: float, method: str = "rdp") -> float:
    """The smallest noise multiplier (to 0.1%) whose epsilon after `rounds` is within
    `target_epsilon`; ValueError if even `MAX_NOISE_MULTIPLIER` is not enough."""
    if epsilon(MAX_NOISE_MULTIPLIER, sampling, rounds, delta, method) > target_epsilon:
        raise ValueError(f"target_epsilon={target_epsilon:g} cannot be met in {rounds} round(s) at delta={delta:g} "
                         f"with a noise multiplier up to {MAX_NOISE_MULTIPLIER:g}")
    low, high = 0.0, 1.0
    while epsilon(high, sampling, rounds, delta, method) > target_epsilon:
        low, high = high, high * 2
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        if epsilon(middle, sampling, rounds, delta, method) > target_epsilon:
            low = middle
        else:
            high = middle
    return high


def rounds_within(target_epsilon: float, noise_multiplier: float, sampling: Sampling, max_rounds: int,
                  delta: float, method: str = "rdp") -> int:
    """How many rounds (at most `max_rounds`) keep epsilon within `target_epsilon`
    (epsilon grows with every round, so this is a bisection)."""
    if epsilon(noise_multiplier, sampling, max_rounds, delta, method) <= target_epsilon:
        return max_rounds
    low, high = 0, max_rounds  # epsilon(low) <= target < epsilon(high)
    while high - low > 1:
        middle = (low + high) // 2
        if epsilon(noise_multiplier, sampling, middle, delta, method) <= target_epsilon:
            low = middle
        else:
            high = middle
    return low
