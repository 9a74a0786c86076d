"""Oort: guided participant selection (Lai et al., "Oort: Efficient Federated Learning
via Guided Participant Selection", OSDI 2021), as in its FedScale implementation.

Each round, with exploration share epsilon:
- exploit `(1 - epsilon) K` clients already seen, sampled in proportion to
  `util_i = (normalised statistical utility + staleness bonus) x system penalty`:
  statistical utility `|B_i| sqrt(mean loss^2)` from the client's last round,
  clipped at its 95th percentile and min-max normalised; staleness bonus
  `sqrt(c log R / L_i)` (L_i: the last round it trained in); system penalty
  `(T / d_i)^alpha` when its duration d_i exceeds the preferred duration T;
  only clients within `cutoff` of the K-th best are sampled from;
- explore the rest among clients never seen, preferring large, fast ones;
- epsilon decays each round to a floor, and to 0 once every client has been seen;
- the pacer sets T as a percentile of the clients' durations and relaxes it when
  the exploited utility plateaus (more clients, more data), tightens it when
  the utility swings sharply.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from fedray.config.scheduling import OortConfig
from fedray.config.schema import SelectionConfig
from fedray.selection.base import SELECTORS, Selector, SelectionRequest, require_profiles

_CLIP_PERCENTILE = 95.0
"""Utilities above this percentile are clipped, so one outlier does not flatten the rest."""
_SAMPLE_WINDOW = 5.0
"""Explore among the top `5 x n_explore` unseen clients (FedScale's `sample_window`)."""
_FLAT, _SHARP = 0.1, 5.0
"""The pacer's thresholds on the relative change of windowed exploited utility."""


class OortState(NamedTuple):
    exploration: float
    preferred_percentile: float
    exploit_utility: tuple[float, ...] = ()
    """Mean utility of each round's exploited clients, measured after they trained."""
    last_exploited: tuple[int, ...] = ()


@SELECTORS.register("oort")
def oort(cfg: SelectionConfig) -> Selector:
    o = cfg.oort

    def init(num_clients: int) -> OortState:
        return OortState(o.exploration, o.preferred_percentile)

    def select(request: SelectionRequest, state: OortState, rng: np.random.Generator):
        profiles = require_profiles(request, "oort")
        utility = profiles.statistical_utility()
        state = _pace(state, utility, request.server_round, o)
        k = min(request.num_clients, len(request.available))
        durations = profiles.duration_estimate()
        preferred = float(np.percentile(durations, state.preferred_percentile))
        penalty = _system_penalty(durations, preferred, o.penalty)

        available = request.available
        seen = ~np.isnan(utility[available])
        explored, unexplored = available[seen], available[~seen]
        exploration = max(state.exploration * o.exploration_decay, o.exploration_min)
        if np.isnan(utility).sum() == 0:  # nobody left to explore
            exploration = 0.0
        n_exploit = min(int(k * (1.0 - exploration)), len(explored))
        n_explore = min(len(unexplored), k - n_exploit)
        n_exploit = min(k - n_explore, len(explored))

        scores = _exploit_scores(utility, profiles.last_round, explored, request.server_round, o.staleness)
        scores = scores * penalty[explored]
        exploit = _sample_top(explored, scores, n_exploit, _within_cutoff(scores, n_exploit, o.cutoff), rng)
        reward = profiles.num_examples[unexplored] * penalty[unexplored]
        window = int(math.ceil(_SAMPLE_WINDOW * n_explore))
        explore = _sample_top(unexplored, reward.astype(np.float64), n_explore, window, rng)
        chosen = [int(c) for c in (*exploit, *explore)]
        return chosen, state._replace(exploration=exploration, last_exploited=tuple(int(c) for c in exploit))

    return Selector(init, select)


def _system_penalty(durations: np.ndarray, preferred: float, alpha: float) -> np.ndarray:
    """(T / d)^alpha for clients slower than the preferred duration T, else 1."""
    with np.errstate(divide="ignore"):
        ratio = np.where(durations > preferred, preferred / np.maximum(durations, 1e-12), 1.0)
    return ratio ** alpha


def _exploit_scores(utility: np.ndarray, last_round: np.ndarray, explored: np.ndarray,
                    server_round: int, staleness: float) -> np.ndarray:
    """Clipped, normalised statistical utility plus the staleness bonus."""
    if len(explored) == 0:
        return np.zeros(0)
    u = utility[explored]
    clip = np.percentile(u, _CLIP_PERCENTILE)
    low = u.min() * 0.999
    normalised = (np.minimum(u, clip) - low) / max(u.max() - low, 1e-4)
    bonus = np.sqrt(staleness * math.log(max(server_round, 1)) / np.maximum(last_round[explored], 1))
    return normalised + bonus


def _sample_top(ids: np.ndarray, scores: np.ndarray, n: int, pool_size: int,
                rng: np.random.Generator) -> np.ndarray:
    """`n` of the `pool_size` best-scoring `ids`, sampled without replacement in
    proportion to their scores."""
    if n <= 0:
        return ids[:0]
    order = np.lexsort((ids, -scores))  # best first, ties by id
    pool = order[: max(n, pool_size)]
    weights = np.maximum(scores[pool], 0.0) + 1e-12
    picked = rng.choice(len(pool), size=n, replace=False, p=weights / weights.sum())
    return ids[pool[picked]]


def _within_cutoff(scores: np.ndarray, n: int, cutoff: float) -> int:
    """How many scores are at least `cutoff` x the n-th best."""
    if n <= 0:
        return 0
    return int(np.sum(scores >= cutoff * np.sort(scores)[::-1][n - 1]))


def _pace(state: OortState, utility: np.ndarray, server_round: int, o: OortConfig) -> OortState:
    """Record last round's exploited utility; every `pacer_step` rounds move the preferred percentile."""
    history = state.exploit_utility
    if state.last_exploited:
        values = utility[list(state.last_exploited)]
        values = values[~np.isnan(values)]
        history = history + (float(values.mean()) if len(values) else 0.0,)
    percentile = state.preferred_percentile
    step = o.pacer_step
    if len(history) >= 2 * step and server_round % step == 0:
        previous, current = sum(history[-2 * step : -step]), sum(history[-step:])
        if abs(current - previous) <= _FLAT * previous:
            percentile = min(100.0, percentile + o.pacer_delta)
        elif abs(current - previous) >= _SHARP * previous:
            percentile = max(o.pacer_delta, percentile - o.pacer_delta)
    return state._replace(exploit_utility=history[-2 * step :], preferred_percentile=percentile)
