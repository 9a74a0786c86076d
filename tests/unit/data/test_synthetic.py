"""Synthetic(alpha, beta) against its definition (Li et al., MLSys 2020, section 5.1)."""

import numpy as np
import pytest

from fedray.config import ConfigError, load_config
from fedray.config.synthetic import SyntheticConfig
from fedray.data.federated import build_federated_dataset
from fedray.data.synthetic import client_sizes, generate, input_scales

SMALL = dict(size_log_mean=1.0, size_log_sigma=1.0, size_min=5, size_max=60)
"""A few examples per client, so thousands of clients generate in a fraction of a second."""


def clients(num_clients=2000, seed=0, **overrides):
    return generate(SyntheticConfig(**{**SMALL, **overrides}), num_clients, seed, keep_models=True)


def test_shapes_sizes_and_owners():
    cfg = SyntheticConfig(**SMALL, num_features=20, num_classes=5)
    data = generate(cfg, 300, seed=3, keep_models=True)
    rows = int(data.sizes.sum())
    assert data.x.shape == (rows, 20) and data.x.dtype == np.float32
    assert data.y.shape == data.owner.shape == (rows,) and set(np.unique(data.y)) <= set(range(5))
    assert np.array_equal(data.owner, np.repeat(np.arange(300), data.sizes))  # grouped by client
    assert data.weights.shape == (300, 20, 5) and data.biases.shape == (300, 5) and data.input_means.shape == (300, 20)
    # the paper's power law: floor(LogNormal) + minimum, here capped
    drawn = np.random.default_rng([3, 0x5E7D, 0]).lognormal(1.0, 1.0, 300)
    assert np.array_equal(data.sizes, np.minimum(np.floor(drawn) + 5, 60))
    assert data.sizes.min() >= 5 and data.sizes.max() <= 60


def test_labels_are_the_argmax_of_each_clients_own_softmax_model():
    data = clients(500)
    logits = np.einsum("rd,rdk->rk", data.x.astype(np.float64), data.weights[data.owner].astype(np.float64))
    logits += data.biases[data.owner]
    np.testing.assert_array_equal(np.argmax(logits, axis=1), data.y)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_model_heterogeneity_is_alpha(alpha):
    """W_k, b_k ~ N(u_k, 1) with u_k ~ N(0, alpha): per client, the entries' mean is u_k and
    their spread 1; over clients, the means spread by alpha (plus 1/sqrt(610) of noise)."""
    data = clients(3000, alpha=alpha)
    entries = np.concatenate([data.weights.reshape(3000, -1), data.biases], axis=1)  # 610 per client
    means = entries.mean(axis=1)
    assert np.std(entries - means[:, None]) == pytest.approx(1.0, abs=0.02)
    assert np.std(means) == pytest.approx(np.sqrt(alpha ** 2 + 1 / 610), rel=0.06, abs=0.01)


@pytest.mark.parametrize("beta", [0.0, 1.0, 3.0])
def test_data_heterogeneity_is_beta_and_the_covariance_is_the_papers(beta):
    """x ~ N(v_k, Sigma), v_k ~ N(B_k, 1), B_k ~ N(0, beta), Sigma = diag(j^-1.2)."""
    data = clients(3000, beta=beta)
    v_means = data.input_means.mean(axis=1)  # ~ B_k
    assert np.std(v_means) == pytest.approx(np.sqrt(beta ** 2 + 1 / 60), rel=0.06, abs=0.02)
    assert np.std(data.input_means - v_means[:, None]) == pytest.approx(1.0, abs=0.02)
    noise = data.x - data.input_means[data.owner]
    np.testing.assert_allclose(noise.var(axis=0), input_scales(60) ** 2, rtol=0.05)
    np.testing.assert_allclose(noise.mean(axis=0), 0.0, atol=0.01)


def test_iid_variant_shares_one_model_and_one_input_distribution():
    data = clients(400, iid=True)
    assert (data.weights == data.weights[0]).all() and (data.biases == data.biases[0]).all()
    assert not data.input_means.any()
    np.testing.assert_allclose(data.x.var(axis=0), input_scales(60) ** 2, rtol=0.1)


def test_same_seed_same_data_and_another_seed_differs():
    a, b, c = generate(SyntheticConfig(**SMALL), 700, 1), generate(SyntheticConfig(**SMALL), 700, 1), \
        generate(SyntheticConfig(**SMALL), 700, 2)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.sizes, c.sizes)


def test_each_client_gets_its_own_rows_with_a_fifth_held_out():
    cfg = load_config(None, ["data.dataset=synthetic", "data.partition=natural", "clients.num_clients=50",
                             "data.synthetic.size_min=10", "data.synthetic.size_max=40"])
    dataset = build_federated_dataset(cfg.data, 50, cfg.seed)
    sizes = client_sizes(cfg.data.synthetic, 50, cfg.seed)
    held_out = sizes - np.diff(dataset.offsets)
    np.testing.assert_array_equal(held_out, np.round(0.2 * sizes))
    assert dataset.test.num_rows == held_out.sum() and dataset.info.num_features == 60
    generated = generate(cfg.data.synthetic, 50, cfg.seed)
    own = {tuple(row) for row in generated.x[generated.owner == 7]}
    assert {tuple(row) for row in dataset.shard(7).column("x").to_pylist()} <= own


def test_synthetic_data_needs_natural_partitioning_and_sane_sizes():
    with pytest.raises(ConfigError, match="data.dataset=synthetic generates each client's own data: "
                                          "set data.partition=natural"):
        load_config(None, ["data.dataset=synthetic"])
    with pytest.raises(ConfigError, match=r"data.synthetic.size_max \(3\) must be >= data.synthetic.size_min"):
        load_config(None, ["data.dataset=synthetic", "data.partition=natural", "data.synthetic.size_max=3"])
    with pytest.raises(ConfigError, match="data.synthetic.alpha must be >= 0"):
        load_config(None, ["data.dataset=synthetic", "data.partition=natural", "data.synthetic.alpha=-1"])


def test_rows_generated_block_by_block_are_the_rows_of_the_whole_generation():
    """What a pool actor of a 100,000-client run does: only the blocks that hold its rows."""
    from fedray.data.synthetic import SyntheticData, _BLOCK

    cfg = SyntheticConfig(size_log_mean=1.0, size_log_sigma=1.0, size_min=5, size_max=200)
    num_clients = 2 * _BLOCK + 7
    whole = SyntheticData(cfg).for_clients(num_clients, seed=4)
    rng = np.random.default_rng(0)
    picked = [rng.permutation(len(whole.y))[:500], np.flatnonzero(whole.owner == num_clients - 1), np.zeros(0, np.int64)]
    tables = SyntheticData(cfg).tables_at(num_clients, 4, picked)
    for rows, table in zip(picked, tables):
        assert table.equals(whole.table(rows))
