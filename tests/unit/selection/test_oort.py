"""Oort: fast high-loss clients first, unseen ones still explored, staleness, pacer."""

import collections

import numpy as np
import pytest

from fedray.config import load_config
from fedray.selection import SELECTORS, SelectionRequest
from fedray.selection.oort import OortState, _exploit_scores


def oort(*overrides):
    return SELECTORS.build("oort", load_config(None, list(overrides)).server.selection)


# Four groups of 10 clients with equal data: fast/slow x high/low loss.
FAST_HIGH, FAST_LOW, SLOW_HIGH, SLOW_LOW = (range(i, i + 10) for i in (0, 10, 20, 30))
DURATION = [1.0] * 20 + [20.0] * 20
LOSS = [2.0] * 10 + [0.2] * 10 + [2.0] * 10 + [0.2] * 10


def test_prefers_fast_high_loss_clients(profiles_factory):
    profiles = profiles_factory([50] * 40, DURATION, LOSS)
    selector, rng = oort(), np.random.default_rng(0)
    state = selector.init(40)
    for r in range(2, 12):
        chosen, state = selector.select(SelectionRequest(r, np.arange(40), 10, profiles), state, rng)
        assert sorted(chosen) == list(FAST_HIGH), r  # exploration is 0: every client was seen


def test_speed_and_loss_both_count(profiles_factory):
    """Sampling is proportional to utility: the 5 fast high-loss clients nearly always
    make it, the rest come from the fast low-loss group (within the cut-off), never
    from the slow ones (penalised by (1/20)^2)."""
    duration = [1.0] * 5 + [1.0] * 10 + [20.0] * 10
    loss = [2.0] * 5 + [0.2] * 10 + [2.0] * 10
    profiles = profiles_factory([50] * 25, duration, loss)
    selector, rng = oort(), np.random.default_rng(1)
    state, picked = selector.init(25), collections.Counter()
    for r in range(2, 22):
        chosen, state = selector.select(SelectionRequest(r, np.arange(25), 10, profiles), state, rng)
        assert not set(chosen) & set(range(15, 25))
        picked.update(chosen)
    assert sum(picked[c] for c in range(5)) >= 0.9 * 5 * 20
    assert sum(picked[c] for c in range(5, 15)) == 10 * 20 - sum(picked[c] for c in range(5))


def test_still_explores_unseen_clients(profiles_factory):
    """20 clients seen, 20 never: while any is unseen a share of each round (epsilon,
    decaying to its 0.3 floor) goes to them, preferring large fast ones."""
    loss = [1.0] * 20 + [np.nan] * 20
    sizes = [50] * 20 + [100] * 10 + [5] * 10       # unseen 20..29 large, 30..39 small
    duration = [1.0] * 20 + [1.0] * 10 + [1.0] * 10
    profiles = profiles_factory(sizes, duration, loss)
    selector, rng = oort(), np.random.default_rng(2)
    state = selector.init(40)
    unseen_per_round, explored = [], collections.Counter()
    for r in range(1, 101):
        chosen, state = selector.select(SelectionRequest(r, np.arange(40), 10, profiles), state, rng)
        unseen = [c for c in chosen if c >= 20]
        unseen_per_round.append(len(unseen))
        explored.update(unseen)
    assert unseen_per_round[0] == 9                     # epsilon 0.9 x 0.98: 1 exploited, 9 explored
    assert unseen_per_round[-1] == 3                    # the 0.3 floor
    assert state.exploration == pytest.approx(0.3)
    large = sum(explored[c] for c in range(20, 30))
    small = sum(explored[c] for c in range(30, 40))
    assert large > 5 * small


def test_exploration_stops_once_everyone_was_seen(profiles_factory):
    profiles = profiles_factory([50] * 40, DURATION, LOSS)
    selector = oort()
    _, state = selector.select(SelectionRequest(1, np.arange(40), 10, profiles), selector.init(40),
                               np.random.default_rng(0))
    assert state.exploration == 0.0


def test_staleness_bonus_favours_clients_not_seen_for_long(profiles_factory):
    profiles = profiles_factory([50, 50, 50], [1.0] * 3, [1.0, 1.0, 2.0], last_round=[1, 19, 19])
    scores = _exploit_scores(profiles.statistical_utility(), profiles.last_round, np.arange(3), 20, 0.1)
    assert scores[0] > scores[1]
    assert scores[0] - scores[1] == pytest.approx(np.sqrt(0.1 * np.log(20)) * (1 - 1 / np.sqrt(19)))


def test_pacer_relaxes_the_preferred_duration_when_utility_is_flat(profiles_factory):
    profiles = profiles_factory([50] * 40, DURATION, LOSS)
    selector, rng = oort("server.selection.oort.pacer_step=3"), np.random.default_rng(0)
    state = selector.init(40)
    percentiles = []
    for r in range(1, 14):
        _, state = selector.select(SelectionRequest(r, np.arange(40), 10, profiles), state, rng)
        percentiles.append(state.preferred_percentile)
    # Exploited utility is constant, so at every pacer step with two full windows behind it
    # (rounds 9 and 12: the window only fills from round 2) T's percentile moves up by 5.
    assert percentiles[:8] == [30.0] * 8
    assert percentiles[8] == percentiles[10] == 35.0 and percentiles[11] == 40.0


def test_pacer_tightens_when_utility_swings(profiles_factory):
    profiles = profiles_factory([50] * 40, DURATION, LOSS)
    selector = oort("server.selection.oort.pacer_step=2")
    history = (1.0, 1.0, 10.0)  # the next measured value (~ utility of FAST_HIGH) jumps again
    state = OortState(0.0, 50.0, history, tuple(FAST_HIGH))
    _, state = selector.select(SelectionRequest(4, np.arange(40), 10, profiles), state, np.random.default_rng(0))
    assert state.preferred_percentile == 45.0
