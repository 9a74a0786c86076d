"""Pareto: the selection is on the latency/cost front, never dominated."""

import itertools

import numpy as np
import pytest

from fedray.config import load_config
from fedray.selection import SELECTORS, SelectionRequest
from fedray.selection.pareto import choose, pareto_front


def pareto(*overrides):
    return SELECTORS.build("pareto", load_config(None, list(overrides)).server.selection)


def objectives(members, latency, cost):
    members = list(members)
    return latency[members].max(), cost[members].sum()


def all_objectives(latency, cost, k):
    """(latency, cost) of every k-subset, by brute force."""
    subsets = np.array(list(itertools.combinations(range(len(latency)), k)))
    return latency[subsets].max(axis=1), cost[subsets].sum(axis=1)


def dominated(point, latency, cost, k):
    """Does any k-subset beat `point` in one objective without losing in the other?"""
    lat, cst = all_objectives(latency, cost, k)
    return bool(np.any((lat <= point[0]) & (cst <= point[1]) & ((lat < point[0]) | (cst < point[1]))))


@pytest.mark.parametrize("seed", range(12))
def test_front_is_exactly_the_non_dominated_set(seed):
    rng = np.random.default_rng(seed)
    n, k = 9, 3
    latency = np.round(rng.lognormal(0, 1, n), 1)   # rounding makes ties
    cost = rng.integers(1, 8, n).astype(float)      # whole numbers: sums are exact, ties happen
    front = pareto_front(latency, cost, k)
    points = set(zip(*all_objectives(latency, cost, k)))
    truth = sorted(p for p in points if not dominated(p, latency, cost, k))
    assert [(f.latency, f.cost) for f in front] == truth
    for f in front:
        assert len(f.members) == k and objectives(f.members, latency, cost) == (f.latency, f.cost)


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("cost", ["gpu_seconds", "price"])
def test_selection_is_never_dominated(profiles_factory, weight, cost):
    """With the candidate pool covering every available client, no 4 of them beat the choice."""
    rng = np.random.default_rng(int(weight * 10))
    n = 10
    types = rng.choice(["low", "mid", "high"], n).astype(object)
    profiles = profiles_factory(rng.integers(10, 50, n), rng.lognormal(0, 1, n),
                                compute=rng.uniform(0.2, 2.0, n), client_type=types)
    selector = pareto(f"server.selection.pareto.weight={weight}", f"server.selection.pareto.cost={cost}",
                      "server.selection.pareto.candidates=10")
    chosen, _ = selector.select(SelectionRequest(1, np.arange(n), 4, profiles), (), np.random.default_rng(0))
    latency = profiles.duration_estimate()
    prices = {"high": 3.0, "mid": 1.5, "low": 1.0} if cost == "price" else {}
    unit_cost = profiles.compute_estimate() * np.array([prices.get(t, 1.0) for t in types])
    assert len(chosen) == 4
    assert not dominated(objectives(chosen, latency, unit_cost), latency, unit_cost, 4)


def test_weight_moves_along_the_front(profiles_factory):
    # fast clients are expensive, slow ones cheap: a real trade-off
    latency = np.array([1.0, 1.5, 2.0, 4.0, 6.0, 8.0])
    compute = np.array([5.0, 4.0, 3.0, 1.0, 0.5, 0.2])
    profiles = profiles_factory([10] * 6, latency, compute=compute)
    picks = {}
    for weight in (0.0, 1.0):
        selector = pareto(f"server.selection.pareto.weight={weight}", "server.selection.pareto.candidates=3")
        picks[weight], _ = selector.select(SelectionRequest(1, np.arange(6), 2, profiles), (),
                                           np.random.default_rng(0))
    assert sorted(picks[1.0]) == [0, 1]   # fastest round
    assert sorted(picks[0.0]) == [4, 5]   # cheapest


def test_prices_per_client_type_change_the_choice(profiles_factory):
    """Equal speed and compute; `price` makes the `high` type expensive, so a
    cost-minded selection avoids it."""
    types = np.array(["high", "high", "low", "low", "mid"], dtype=object)
    profiles = profiles_factory([10] * 5, [1.0, 1.0, 1.0, 1.0, 1.0], compute=[1.0] * 5, client_type=types)
    selector = pareto("server.selection.pareto.cost=price", "server.selection.pareto.weight=0",
                      "server.selection.pareto.candidates=5")
    chosen, _ = selector.select(SelectionRequest(1, np.arange(5), 2, profiles), (), np.random.default_rng(0))
    assert sorted(chosen) == [2, 3]


def test_choose_scales_each_objective_over_the_front():
    front = pareto_front(np.array([1.0, 2.0, 10.0]), np.array([10.0, 5.0, 1.0]), 1)
    assert [f.members for f in front] == [(0,), (1,), (2,)]
    assert choose(front, 0.5).members == (1,)  # (0.11, 0.44) beats (0, 1) and (1, 0)
