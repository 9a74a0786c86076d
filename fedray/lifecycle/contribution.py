"""Contribution evaluation: what each aggregated client's update was worth to its round.

The players of a round are its accepted updates. A coalition S gets the model its
members' updates alone would have made, the FedAvg reconstruction

    M_S = M_t + sum_{i in S} w_i D_i / sum_{i in S} w_i        (`normalize: subset`)

as GTG-Shapley defines it, or with the whole round's weight as denominator
(`normalize: total`: coalitions move the model by their share of the step, so a
client that sent a zero update is an exact null player; under `subset` it dilutes
the average and is worth what that dilution costs). V(S) is the utility of M_S on
the server's held-out split, V(empty) that of M_t. Methods:

- `exact_shapley`: the Shapley value over all 2^n coalitions (reference, small n);
- `leave_one_out`: V(N) - V(N minus i), n + 1 evaluations;
- `gtg_shapley`: GTG-Shapley (Liu et al., "GTG-Shapley: Efficient and Accurate
  Participant Contribution Evaluation in Federated Learning", ACM TIST 2022):
  Monte-Carlo permutations whose first position cycles through the players
  (guided sampling), truncated within a permutation once the coalition's value is
  within `epsilon` of V(N), and skipped for the whole round when V(N) is within
  `epsilon` of V(empty); sampling stops when the estimates have converged. Values
  of coalitions are cached, so no model is evaluated twice.

Values are in the utility's units (accuracy, or minus the loss) and add up to
V(N) - V(empty) (exactly for the Shapley methods, within `epsilon` for GTG).
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np

from fedray.config.registry import Registry

NORMALIZATIONS = ("subset", "total")


class RoundGame:
    """The cooperative game of one round: coalition -> utility of its model (cached)."""

    def __init__(self, base: np.ndarray, weights: Sequence[float], updates: Sequence[np.ndarray],
                 utility: Callable[[np.ndarray], float], normalize: str = "subset"):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}")
        assert len(weights) == len(updates) and len(updates) > 0
        self.base, self.updates, self.utility = base, list(updates), utility
        self.weights = np.asarray(weights, dtype=np.float64)
        self.normalize = normalize
        self._values: dict[int, float] = {}

    @property
    def num_players(self) -> int:
        return len(self.updates)

    @property
    def evaluations(self) -> int:
        """Distinct coalitions evaluated so far (each one model evaluation)."""
        return len(self._values)

    def model(self, members: Iterable[int]) -> np.ndarray:
        """M_S: the base plus the coalition's weighted updates (module docstring)."""
        members = sorted(set(members))
        out = np.array(self.base, dtype=np.float32, copy=True)
        if not members:
            return out
        denominator = self.weights[members].sum() if self.normalize == "subset" else self.weights.sum()
        for i in members:
            out += np.float32(self.weights[i] / denominator) * np.asarray(self.updates[i], np.float32)
        return out

    def value(self, members: Iterable[int]) -> float:
        """V(S), computed once per coalition."""
        members = list(members)
        mask = sum(1 << i for i in set(members))
        if mask not in self._values:
            self._values[mask] = float(self.utility(self.model(members)))
        return self._values[mask]


class Valuation(NamedTuple):
    values: np.ndarray
    """Per player, in the game's order."""
    skipped: bool = False
    """GTG's between-round truncation: the round's gain was below epsilon, all values 0."""
    permutations: int = 0
    """Monte-Carlo permutations used (GTG only)."""


class Valuer(NamedTuple):
    """A contribution method: `value(game, rng)`, and how its coalitions' models are built."""

    value: Callable[[RoundGame, np.random.Generator], Valuation]
    normalize: str = "subset"


CONTRIBUTIONS: Registry[Callable[..., Valuer]] = Registry("contribution method", returns=Valuer)
"""Factories for `server.contribution.name`; their keyword arguments are its `args`."""


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}")


@CONTRIBUTIONS.register("exact_shapley")
def exact_shapley(normalize: str = "subset") -> Valuer:
    """The Shapley value from every coalition: 2^n model evaluations."""
    _check_normalize(normalize)

    def value(game: RoundGame, rng: np.random.Generator) -> Valuation:
        n = game.num_players
        v = [game.value(i for i in range(n) if mask >> i & 1) for mask in range(1 << n)]
        share = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
        phi = np.zeros(n)
        for i in range(n):
            for mask in range(1 << n):
                if not mask >> i & 1:
                    phi[i] += share[bin(mask).count("1")] * (v[mask | 1 << i] - v[mask])
        return Valuation(phi)

    return Valuer(value, normalize)


@CONTRIBUTIONS.register("leave_one_out")
def leave_one_out(normalize: str = "subset") -> Valuer:
    """V(N) - V(N minus i): what the round would have lost without each client."""
    _check_normalize(normalize)

    def value(game: RoundGame, rng: np.random.Generator) -> Valuation:
        everyone = range(game.num_players)
        full = game.value(everyone)
        return Valuation(np.array([full - game.value(j for j in everyone if j != i) for i in everyone]))

    return Valuer(value, normalize)


@CONTRIBUTIONS.register("gtg_shapley")
def gtg_shapley(epsilon: float = 0.001, max_permutations: int = 100, min_permutations: int = 30,
                tolerance: float = 0.05, normalize: str = "subset") -> Valuer:
    """GTG-Shapley (module docstring). `epsilon`: truncation threshold in utility units.
    Sampling runs at least max(`min_permutations`, n) permutations and at most
    `max_permutations`, and stops once each of the last 10 running estimates is within
    `tolerance` of the newest (mean over players of the relative difference), the
    convergence test of the authors' implementation."""
    _check_normalize(normalize)
    if epsilon < 0 or max_permutations < 1 or min_permutations < 1 or tolerance < 0:
        raise ValueError(f"needs epsilon >= 0, max_permutations >= 1, min_permutations >= 1 and "
                         f"tolerance >= 0, got {epsilon}, {max_permutations}, {min_permutations}, {tolerance}")

    def value(game: RoundGame, rng: np.random.Generator) -> Valuation:
        n = game.num_players
        empty, full = game.value(()), game.value(range(n))
        phi = np.zeros(n)
        if abs(full - empty) < epsilon:  # between-round truncation
            return Valuation(phi, skipped=True)
        history: collections.deque = collections.deque(maxlen=_LAST_K)
        for k in range(1, max_permutations + 1):
            first = (k - 1) % n  # guided sampling: every player leads equally often
            order = [first, *rng.permutation([i for i in range(n) if i != first])]
            previous, members = empty, []
            for i in order:
                members.append(int(i))
                # within-round truncation: the rest of the permutation adds (almost) nothing
                current = previous if abs(full - previous) < epsilon else game.value(members)
                phi[i] += (current - previous - phi[i]) / k
                previous = current
            history.append(phi.copy())
            if k >= max(min_permutations, n) and _converged(history, tolerance):
                break
        return Valuation(phi, permutations=k)

    return Valuer(value, normalize)


_LAST_K = 10


def _converged(history, tolerance: float) -> bool:
    """Each recent estimate within `tolerance` of the newest (mean relative difference)."""
    newest = history[-1]
    scale = np.abs(newest) + 1e-12
    return max(float(np.mean(np.abs(h - newest) / scale)) for h in history) <= tolerance
