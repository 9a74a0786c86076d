import itertools

import numpy as np
import pytest

from fedray.strategy.aggregate import WeightedMean


def test_weighted_mean_matches_hand_computation():
    agg = WeightedMean(3)
    agg.reset([0, 1, 2])
    agg.add(0, 1, np.array([1.0, 2.0, 3.0], dtype=np.float32))
    agg.add(1, 3, np.array([5.0, 6.0, 7.0], dtype=np.float32))
    agg.skip(2)
    # (1*[1,2,3] + 3*[5,6,7]) / 4 = [16, 20, 24] / 4
    np.testing.assert_array_equal(agg.result(), np.array([4.0, 5.0, 6.0], dtype=np.float32))
    assert agg.num_added == 2 and agg.total_weight == 4


def test_result_does_not_depend_on_arrival_order():
    rng = np.random.default_rng(0)
    updates = {c: rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-3, 3)
               for c in range(5)}
    weights = {c: int(rng.integers(1, 50)) for c in range(5)}
    results = []
    for order in itertools.permutations(range(5)):
        agg = WeightedMean(1000)
        agg.reset(range(5))
        for c in order:
            agg.add(c, weights[c], updates[c])
        results.append(agg.result().copy())
    for r in results[1:]:
        assert np.array_equal(r, results[0])  # bit-identical, not merely close
    expected = sum(weights[c] * updates[c].astype(np.float64) for c in range(5)) / sum(weights.values())
    np.testing.assert_allclose(results[0], expected, rtol=1e-5, atol=1e-5)


def test_early_arrivals_are_held_only_until_their_predecessors_arrive():
    agg = WeightedMean(2)
    agg.reset([0, 1, 2, 3])
    one = np.ones(2, dtype=np.float32)
    agg.add(3, 1, one)
    agg.add(2, 1, one)
    assert agg.num_held == 2 and agg.num_added == 0
    agg.skip(0)
    assert agg.num_held == 2
    agg.add(1, 1, one)
    assert agg.num_held == 0 and agg.num_added == 3


def test_buffer_is_reused_across_rounds():
    agg = WeightedMean(4)
    agg.reset([0])
    agg.add(0, 2, np.full(4, 3.0, dtype=np.float32))
    first = agg.result()
    agg.reset([5])
    agg.add(5, 1, np.full(4, 1.0, dtype=np.float32))
    second = agg.result()
    assert second is first  # one preallocated buffer, no per-round allocation
    np.testing.assert_array_equal(second, np.ones(4, dtype=np.float32))


def test_an_update_cannot_be_applied_twice_or_from_an_unselected_client():
    agg = WeightedMean(1)
    agg.reset([0, 1])
    agg.add(0, 1, np.ones(1, dtype=np.float32))
    with pytest.raises(AssertionError, match="arrived twice"):
        agg.add(0, 1, np.ones(1, dtype=np.float32))
    with pytest.raises(AssertionError, match="was not selected"):
        agg.add(7, 1, np.ones(1, dtype=np.float32))


def test_all_skipped_is_an_error():
    agg = WeightedMean(1)
    agg.reset([0])
    agg.skip(0)
    with pytest.raises(ValueError, match="no client update"):
        agg.result()
