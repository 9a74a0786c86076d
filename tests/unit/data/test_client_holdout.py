"""A client's held-out split (`data.client_test_fraction`): seeded, per client, disjoint from its training rows."""

import numpy as np
import pyarrow as pa
import pytest

from fedray.data.shards import ClientShards, hold_out
from fedray.data.split import client_holdout, num_held_out


@pytest.mark.parametrize("num_rows, fraction, expected", [(10, 0.2, 2), (3, 0.2, 1), (2, 0.9, 1), (1, 0.5, 0),
                                                          (0, 0.5, 0), (100, 0.0, 0), (101, 0.25, 25)])
def test_num_held_out_is_about_the_fraction_at_least_one_never_all(num_rows, fraction, expected):
    assert num_held_out(num_rows, fraction) == expected
    sizes = np.array([num_rows, num_rows])
    np.testing.assert_array_equal(num_held_out(sizes, fraction), [expected, expected])


def test_the_split_is_seeded_disjoint_and_covers_the_rows():
    train, test = client_holdout(50, 0.2, seed=7, client_id=3)
    again_train, again_test = client_holdout(50, 0.2, seed=7, client_id=3)
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)
    assert len(test) == num_held_out(50, 0.2) and not set(train) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(50))
    other_client, _ = client_holdout(50, 0.2, seed=7, client_id=4)[::-1]
    other_seed, _ = client_holdout(50, 0.2, seed=8, client_id=3)[::-1]
    assert not np.array_equal(test, other_client) and not np.array_equal(test, other_seed)


def test_hold_out_keeps_each_clients_held_out_rows_out_of_its_training_shard():
    sizes = [12, 7, 30]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    table = pa.table({"row": np.arange(offsets[-1])})
    shards = ClientShards(table, [4, 5, 6], offsets)
    train, held = hold_out(shards, 0.25, seed=1)
    for i, cid in enumerate([4, 5, 6]):
        mine = set(range(offsets[i], offsets[i + 1]))
        train_rows, held_rows = set(train[cid]["row"].to_pylist()), set(held[cid]["row"].to_pylist())
        assert not train_rows & held_rows and train_rows | held_rows == mine
        assert len(held_rows) == num_held_out(sizes[i], 0.25)
        _, positions = client_holdout(sizes[i], 0.25, 1, cid)
        assert held_rows == {offsets[i] + p for p in positions}  # the same split whichever actor hosts it
    same, none = hold_out(shards, 0.0, seed=1)
    assert same is shards and none == {}
