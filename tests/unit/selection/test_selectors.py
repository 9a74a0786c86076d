"""Properties every selector keeps: availability, determinism, resumable state."""

import pickle

import numpy as np
import pytest

from fedray.config import load_config
from fedray.selection import SELECTORS, SelectionRequest
from fedray.selection.base import scaled

NAMES = ["random", "oort", "power_of_choice", "deadline", "pareto"]


@pytest.fixture
def mixed_profiles(profiles_factory):
    rng = np.random.default_rng(7)
    n = 60
    loss = rng.uniform(0.1, 2.5, n)
    loss[rng.random(n) < 0.3] = np.nan  # never seen
    return profiles_factory(rng.integers(5, 80, n), rng.lognormal(0, 1, n), loss,
                            client_type=rng.choice(["low", "mid", "high"], n).astype(object),
                            last_round=rng.integers(1, 10, n))


def build(name, *overrides):
    cfg = load_config(None, [f"server.selection.name={name}", *overrides]).server.selection
    return SELECTORS.build(name, cfg)


def run_rounds(selector, profiles, available, seed, rounds, state=None, first_round=1):
    rng = np.random.default_rng(seed)
    state = selector.init(profiles.num_clients) if state is None else state
    picks = []
    for r in range(first_round, first_round + rounds):
        chosen, state = selector.select(SelectionRequest(r, available, 10, profiles, 0.0), state, rng)
        picks.append(chosen)
    return picks, state, rng


@pytest.mark.parametrize("name", NAMES)
def test_only_available_clients_are_selected_once(name, mixed_profiles):
    available = np.sort(np.random.default_rng(1).choice(60, 25, replace=False))
    picks, _, _ = run_rounds(build(name), mixed_profiles, available, seed=0, rounds=8)
    want = scaled(1.3, 10) if name == "deadline" else 10
    for chosen in picks:
        assert set(chosen) <= set(available.tolist())
        assert len(chosen) == len(set(chosen)) == want
        assert all(isinstance(c, int) for c in chosen)


@pytest.mark.parametrize("name", NAMES)
def test_fewer_available_than_wanted_selects_them_all(name, mixed_profiles):
    available = np.array([3, 17, 42], dtype=np.int64)
    picks, _, _ = run_rounds(build(name), mixed_profiles, available, seed=0, rounds=2)
    assert all(sorted(chosen) == [3, 17, 42] for chosen in picks)


@pytest.mark.parametrize("name", NAMES)
def test_selection_is_deterministic_for_a_seed(name, mixed_profiles):
    available = np.arange(60)
    first, _, _ = run_rounds(build(name), mixed_profiles, available, seed=5, rounds=6)
    again, _, _ = run_rounds(build(name), mixed_profiles, available, seed=5, rounds=6)
    other, _, _ = run_rounds(build(name), mixed_profiles, available, seed=6, rounds=6)
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", NAMES)
def test_checkpointed_state_resumes_exactly(name, mixed_profiles):
    """State and generator pickled after 3 rounds continue as if never interrupted."""
    selector, available = build(name), np.arange(60)
    straight, _, _ = run_rounds(selector, mixed_profiles, available, seed=3, rounds=6)
    head, state, rng = run_rounds(selector, mixed_profiles, available, seed=3, rounds=3)
    state, rng_state = pickle.loads(pickle.dumps((state, rng.bit_generator.state)))
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    tail = []
    for r in range(4, 7):
        chosen, state = selector.select(SelectionRequest(r, available, 10, mixed_profiles, 0.0), state, rng)
        tail.append(chosen)
    assert head + tail == straight


def test_random_ignores_profiles_and_matches_plain_sampling(mixed_profiles):
    """`random` draws exactly what rng.choice draws: runs from before profiles existed
    select the same clients."""
    available = np.arange(60)
    picks, _, _ = run_rounds(build("random"), mixed_profiles, available, seed=11, rounds=1)
    expected = np.random.default_rng(11).choice(available, size=10, replace=False)
    assert picks[0] == expected.tolist()
