import itertools

import numpy as np
import pytest

from fedray.strategy.aggregate import InOrder, WeightedMean


def aggregate(order, arrivals, num_params):
    """Feed (cid, weight, update|None) arrivals through InOrder into a WeightedMean."""
    stream, mean = InOrder(), WeightedMean(num_params)
    stream.reset(order)
    for cid, weight, update in arrivals:
        for _, item in stream.arrive(cid, None if update is None else (weight, update)):
            if item is not None:
                mean.add(cid, *item)
    assert stream.done
    return mean


def test_weighted_mean_matches_hand_computation():
    mean = aggregate([0, 1, 2], [
        (0, 1, np.array([1.0, 2.0, 3.0], dtype=np.float32)),
        (1, 3, np.array([5.0, 6.0, 7.0], dtype=np.float32)),
        (2, 0, None),
    ], 3)
    # (1*[1,2,3] + 3*[5,6,7]) / 4 = [16, 20, 24] / 4
    np.testing.assert_array_equal(mean.result()[0], np.array([4.0, 5.0, 6.0], dtype=np.float32))
    assert mean.num_added == 2 and mean.total_weight == 4


def test_result_does_not_depend_on_arrival_order():
    rng = np.random.default_rng(0)
    updates = {c: rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-3, 3)
               for c in range(5)}
    weights = {c: int(rng.integers(1, 50)) for c in range(5)}
    results = []
    for order in itertools.permutations(range(5)):
        mean = aggregate(range(5), [(c, weights[c], updates[c]) for c in order], 1000)
        results.append(mean.result()[0].copy())
    for r in results[1:]:
        assert np.array_equal(r, results[0])  # bit-identical, not merely close
    expected = sum(weights[c] * updates[c].astype(np.float64) for c in range(5)) / sum(weights.values())
    np.testing.assert_allclose(results[0], expected, rtol=1e-5, atol=1e-5)


def test_early_arrivals_are_held_only_until_their_predecessors_arrive():
    stream = InOrder()
    stream.reset([0, 1, 2, 3])
    assert stream.arrive(3, "d") == [] and stream.arrive(2, "c") == []
    assert stream.num_held == 2
    assert stream.arrive(0, None) == [(0, None)]
    assert stream.num_held == 2
    assert stream.arrive(1, "b") == [(1, "b"), (2, "c"), (3, "d")]
    assert stream.num_held == 0 and stream.done


def test_buffer_is_reused_across_rounds():
    mean = WeightedMean(4)
    mean.add(0, 2, np.full(4, 3.0, dtype=np.float32))
    first = mean.result()[0]
    mean.reset()
    mean.add(5, 1, np.full(4, 1.0, dtype=np.float32))
    second = mean.result()[0]
    assert second is first  # one preallocated buffer, no per-round allocation
    np.testing.assert_array_equal(second, np.ones(4, dtype=np.float32))


def test_an_arrival_cannot_count_twice_or_come_from_an_unselected_client():
    stream = InOrder()
    stream.reset([0, 1])
    stream.arrive(0, "a")
    with pytest.raises(AssertionError, match="arrived twice"):
        stream.arrive(0, "a")
    with pytest.raises(AssertionError, match="was not selected"):
        stream.arrive(7, "x")


def test_nothing_to_aggregate_is_an_error():
    with pytest.raises(ValueError, match="no client update"):
        WeightedMean(1).result()


def test_norm_bound_clips_each_update_before_the_weighted_mean():
    from fedray.strategy.aggregate import AGGREGATORS

    agg = AGGREGATORS.build("norm_bound", 2, max_norm=1.0)
    agg.reset(agg.init())
    agg.add(0, 1.0, np.array([3.0, 4.0], dtype=np.float32))  # norm 5 -> [0.6, 0.8]
    agg.add(1, 3.0, np.array([0.0, 0.5], dtype=np.float32))  # inside the bound: as is
    np.testing.assert_allclose(agg.result()[0], (np.array([0.6, 0.8]) + 3 * np.array([0.0, 0.5])) / 4, rtol=1e-6)
    with pytest.raises(ValueError, match="max_norm must be > 0, got 0"):
        AGGREGATORS.build("norm_bound", 2, max_norm=0.0)
