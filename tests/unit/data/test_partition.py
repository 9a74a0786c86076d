import numpy as np
import pytest

from fedray.config.schema import DataConfig
from fedray.data.federated import build_federated_dataset
from fedray.data.partition import PARTITIONERS, dirichlet, iid, label_histogram


def labels(n_per_class=100, classes=10):
    return np.repeat(np.arange(classes), n_per_class)


def test_iid_is_a_near_equal_disjoint_cover():
    y = labels()
    shards = iid(y, 7, DataConfig(), np.random.default_rng(0))
    sizes = [len(s) for s in shards]
    assert sum(sizes) == len(y) and max(sizes) - min(sizes) <= 1
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(len(y)))


def test_dirichlet_covers_every_example_once_and_respects_the_minimum():
    y = labels()
    cfg = DataConfig(partition="dirichlet", alpha=0.3, min_examples_per_client=5)
    shards = dirichlet(y, 20, cfg, np.random.default_rng(1))
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(len(y)))
    assert min(len(s) for s in shards) >= 5


def skew(y, shards):
    """Mean share of a client's most common label: 0.1 for uniform over 10 classes, 1 for one class."""
    hist = label_histogram(y, shards, 10)
    return float(np.mean(hist.max(axis=1) / hist.sum(axis=1)))


def test_smaller_alpha_gives_stronger_label_skew():
    y = labels()
    rng = lambda: np.random.default_rng(2)  # noqa: E731
    very_skewed = skew(y, dirichlet(y, 10, DataConfig(alpha=0.05), rng()))
    mild = skew(y, dirichlet(y, 10, DataConfig(alpha=100.0), rng()))
    uniform = skew(y, iid(y, 10, DataConfig(), rng()))
    assert very_skewed > 0.6
    assert mild < 0.2 and uniform < 0.2
    assert very_skewed > mild


def test_partitions_are_deterministic_for_a_seed():
    y = labels()
    a = dirichlet(y, 10, DataConfig(alpha=0.5), np.random.default_rng(3))
    b = dirichlet(y, 10, DataConfig(alpha=0.5), np.random.default_rng(3))
    assert all(np.array_equal(x, z) for x, z in zip(a, b))


def test_impossible_minimum_is_a_clear_error():
    with pytest.raises(ValueError, match="min_examples_per_client=5 x clients.num_clients=300"):
        dirichlet(labels(), 300, DataConfig(min_examples_per_client=5), np.random.default_rng(0))


def test_registry_knows_both_partitions():
    assert {"iid", "dirichlet"} <= set(PARTITIONERS.names())


def test_federated_digits_shards_and_stratified_test_split():
    cfg = DataConfig(dataset="digits", partition="dirichlet", alpha=0.5, test_fraction=0.2)
    data = build_federated_dataset(cfg, num_clients=10, seed=0)
    assert data.num_clients == 10
    assert data.train.num_rows + data.test.num_rows == 1797
    assert abs(data.test.num_rows - 0.2 * 1797) < 10
    test_labels = np.bincount(data.test.column("y").to_numpy(), minlength=10)
    assert test_labels.min() >= 30  # every digit is represented in the held-out split
    assert sum(data.num_examples(c) for c in range(10)) == data.train.num_rows
    shard = data.shard(3)
    assert shard.num_rows == data.num_examples(3)
    assert shard.column("x").type.list_size == 64
