"""Robust aggregators against hand computations and brute force."""

import itertools

import numpy as np
import pytest

from fedray.strategy.aggregate import AGGREGATORS


def aggregate(name, updates, weights=None, state=None, **args):
    agg = AGGREGATORS.build(name, updates[0].size, **args)
    agg.reset(agg.init() if state is None else state)
    for cid, update in enumerate(updates):
        agg.add(cid, 1.0 if weights is None else weights[cid], np.asarray(update, dtype=np.float32))
    return agg.result()


def vectors(*rows):
    return [np.array(r, dtype=np.float32) for r in rows]


def test_median_is_coordinate_wise():
    updates = vectors([1, 10, -3], [2, -5, 0], [100, 0, 1])
    np.testing.assert_array_equal(aggregate("median", updates)[0], [2, 0, 0])
    even = vectors([1, 4], [3, 8])
    np.testing.assert_array_equal(aggregate("median", even)[0], [2, 6])


def test_trimmed_mean_drops_beta_of_each_tail_per_coordinate():
    updates = vectors([1, -100], [2, 5], [3, 6], [4, 7], [1000, 8])
    # beta 0.2 of 5 updates: one value off each end of every coordinate
    np.testing.assert_allclose(aggregate("trimmed_mean", updates, beta=0.2)[0], [3.0, 6.0])
    np.testing.assert_allclose(aggregate("trimmed_mean", updates, beta=0.0)[0], np.mean(updates, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 0.5\), got 0.5"):
        AGGREGATORS.build("trimmed_mean", 2, beta=0.5)


def brute_force_krum_scores(updates, f):
    n = len(updates)
    scores = []
    for i in range(n):
        dists = sorted(float(np.sum((updates[i].astype(np.float64) - updates[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(dists[: n - f - 2]))
    return scores


def test_krum_picks_the_update_brute_force_scores_best_and_ignores_outliers():
    rng = np.random.default_rng(3)
    honest = [rng.normal(0, 0.1, 6).astype(np.float32) + 1 for _ in range(7)]
    attackers = [np.full(6, 50, np.float32), np.full(6, -40, np.float32)]
    updates = honest + attackers
    scores = brute_force_krum_scores(updates, f=2)
    best = int(np.argmin(scores))
    result, _ = aggregate("krum", updates, num_malicious=2)
    np.testing.assert_array_equal(result, updates[best])
    assert best < 7


def test_multi_krum_is_the_weighted_mean_of_the_best_scored():
    rng = np.random.default_rng(4)
    updates = [rng.normal(0, 1, 5).astype(np.float32) for _ in range(8)]
    weights = [float(w) for w in rng.integers(1, 20, 8)]
    scores = brute_force_krum_scores(updates, f=1)
    keep = np.argsort(scores, kind="stable")[:3]
    expected = sum(weights[i] * updates[i].astype(np.float64) for i in keep) / sum(weights[i] for i in keep)
    result, _ = aggregate("multi_krum", updates, weights, num_malicious=1, num_selected=3)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_centered_clip_matches_a_hand_computation_and_starts_from_its_state():
    updates = vectors([0, 0], [3, 4], [0, 1])
    centre = np.array([0, 0], dtype=np.float32)
    # one iteration, tau 1: (0,0) stays, (3,4) -> (0.6,0.8), (0,1) as is; mean (0.2, 0.6)
    result, state = aggregate("centered_clip", updates, state=centre, tau=1.0, iterations=1)
    np.testing.assert_allclose(result, [0.2, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(state, result)  # the next round starts here
    # first round: it starts from the coordinate-wise median (0, 1)
    first, _ = aggregate("centered_clip", updates, tau=100.0, iterations=1)
    np.testing.assert_allclose(first, np.mean(updates, axis=0), rtol=1e-6)  # nothing clipped


@pytest.mark.parametrize("name, args, tolerance", [
    ("median", {}, 0.25), ("trimmed_mean", {"beta": 0.25}, 0.25), ("krum", {"num_malicious": 2}, 0.25),
    ("multi_krum", {"num_malicious": 2, "num_selected": 3}, 0.25),
    ("centered_clip", {"tau": 0.5, "iterations": 3}, 0.25),
    # norm_bound only bounds each attacker's pull: 2 of 9 at norm 5 against ~4.4
    ("norm_bound", {"max_norm": 5.0}, 2 / 9 * (5.0 + 4.5) / 4.4),
])
def test_robust_aggregators_stay_near_the_honest_mean_under_attack(name, args, tolerance):
    """Seven honest updates around 1, two attackers 100x larger in the opposite direction."""
    rng = np.random.default_rng(7)
    honest = [rng.normal(1.0, 0.1, 20).astype(np.float32) for _ in range(7)]
    updates = honest + [np.full(20, -100, np.float32)] * 2
    result, _ = aggregate(name, updates, **args)
    plain, _ = aggregate("weighted_mean", updates)
    honest_mean = np.mean(honest, axis=0)
    assert np.linalg.norm(result - honest_mean) < tolerance * np.linalg.norm(honest_mean)
    assert np.linalg.norm(plain - honest_mean) > 10 * np.linalg.norm(honest_mean)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multi_krum", "centered_clip"])
def test_result_does_not_depend_on_the_order_updates_were_added(name):
    rng = np.random.default_rng(1)
    updates = [rng.normal(0, 1, 8).astype(np.float32) for _ in range(5)]
    results = []
    for order in itertools.islice(itertools.permutations(range(5)), 6):
        agg = AGGREGATORS.build(name, 8)
        agg.reset(agg.init())
        for cid in order:
            agg.add(cid, 1.0, updates[cid])
        results.append(agg.result()[0])
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-6, atol=1e-7)
