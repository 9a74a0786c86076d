"""The `shards` partition (McMahan et al., 2017) and `data.max_examples`."""

import numpy as np
import pytest

from fedray.config.schema import DataConfig
from fedray.data.federated import build_federated_dataset
from fedray.data.partition import label_histogram, shards


def test_each_client_gets_k_label_sorted_shards():
    y = np.repeat(np.arange(10), 100)  # 10 classes of 100
    parts = shards(y, 10, DataConfig(shards_per_client=2), np.random.default_rng(0))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
    assert [len(p) for p in parts] == [100] * 10  # 20 shards of 50
    counts = label_histogram(y, parts, 10)
    assert ((counts > 0).sum(axis=1) <= 2).all()
    assert set(np.unique(counts)) <= {0, 50, 100}  # a shard never straddles two labels here


def test_uneven_sizes_differ_by_at_most_k():
    y = np.random.default_rng(1).integers(0, 7, size=1003)
    parts = shards(y, 9, DataConfig(shards_per_client=3), np.random.default_rng(2))
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 1003 and max(sizes) - min(sizes) <= 3
    assert ((label_histogram(y, parts, 7) > 0).sum(axis=1) <= 2 * 3).all()


def test_too_few_examples_for_the_shards():
    with pytest.raises(ValueError, match=r"cannot be cut into clients.num_clients=10 x data.shards_per_client=2"):
        shards(np.zeros(15, dtype=np.int64), 10, DataConfig(shards_per_client=2), np.random.default_rng(0))


@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_shards_work_for_every_dataset(dataset):
    cfg = DataConfig(dataset=dataset, partition="shards", shards_per_client=1, max_examples=500)
    fed = build_federated_dataset(cfg, 5, seed=0)
    assert fed.train.num_rows + fed.test.num_rows == pytest.approx(500, abs=10)
    y = fed.train.column("y").to_numpy()
    labels_per_client = [len(np.unique(y[a:b])) for a, b in zip(fed.offsets[:-1], fed.offsets[1:])]
    assert max(labels_per_client) <= 3  # one shard of ~80 rows spans at most 2-3 of 10 classes


def test_max_examples_is_a_stratified_subset():
    fed = build_federated_dataset(DataConfig(dataset="mnist5k", max_examples=1000), 4, seed=0)
    y = np.concatenate([fed.train.column("y").to_numpy(), fed.test.column("y").to_numpy()])
    assert np.bincount(y).tolist() == [100] * 10
