import pickle

import numpy as np

from fedray.data.arrow import compact, features_table, to_numpy


def test_round_trip_and_zero_copy_views():
    x = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    y = np.arange(50)
    table = features_table(x, y)
    x2, y2 = to_numpy(table)
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    assert x2.dtype == np.float32 and y2.dtype == np.int64


def test_compact_shard_pickles_only_its_rows():
    x = np.zeros((100_000, 16), dtype=np.float32)
    table = features_table(x, np.zeros(100_000, dtype=np.int64))
    sliced = table.slice(10, 20)
    # A plain slice drags its parent's 6.4 MB along; the compact copy does not.
    assert len(pickle.dumps(sliced)) > 6_000_000
    small = compact(sliced)
    assert len(pickle.dumps(small)) < 10_000
    assert np.array_equal(to_numpy(small)[0], x[10:30])
