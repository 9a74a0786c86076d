"""Objective terms: FedProx's proximal gradient and SCAFFOLD's control variates, by hand."""

import numpy as np
import pytest
import torch

from fedray.config.schema import TrainConfig
from fedray.models.flat import get_flat, param_spec, set_flat
from fedray.strategy.presets import STRATEGIES
from fedray.strategy.terms import LocalRound, proximal, scaffold
from fedray.types import Context


def local_round(model, params, payloads=None, **extra):
    spec = param_spec(model)
    return LocalRound(model, spec, params, payloads or {}, Context(1, 0, 0, num_clients=10),
                      TrainConfig(lr=0.1), **extra)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def gradient(model, term):
    model.zero_grad()
    term(model, None).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()


def test_fedprox_adds_mu_times_the_distance_to_the_global_weights(model):
    spec = param_spec(model)
    anchor = get_flat(model, spec) - 0.5  # the local model has moved 0.5 away in every coordinate
    term = proximal(mu=0.2).objective(local_round(model, anchor), ())
    np.testing.assert_allclose(gradient(model, term), 0.2 * 0.5 * np.ones(spec.num_params), rtol=1e-6)
    assert float(term(model, None).detach()) == pytest.approx(0.5 * 0.2 * spec.num_params * 0.25)
    assert proximal(mu=0.0).objective(local_round(model, anchor), ()) is None
    with pytest.raises(ValueError, match="mu must be >= 0"):
        proximal(mu=-1.0)


def test_scaffold_corrects_every_gradient_by_c_minus_c_i(model):
    spec = param_spec(model)
    params = get_flat(model, spec)
    rng = np.random.default_rng(0)
    c, c_i = (rng.standard_normal(spec.num_params).astype(np.float32) for _ in range(2))
    term = scaffold().objective(local_round(model, params, {"control": c}), c_i)
    np.testing.assert_allclose(gradient(model, term), c - c_i, rtol=1e-6)


def test_scaffold_option_ii_control_update_and_server_absorb():
    term = scaffold()
    c = np.array([1.0, -1.0], dtype=np.float32)
    c_i = np.array([0.5, 0.5], dtype=np.float32)
    delta = np.array([-0.4, 0.2], dtype=np.float32)  # y_i - x after K = 4 steps at lr 0.1
    local = local_round(torch.nn.Linear(1, 1), np.zeros(2, np.float32), {"control": c}, delta=delta, steps=4)
    uplink, new = term.finish(local, c_i)
    # c_i+ = c_i - c + (x - y_i) / (K lr) = [0.5, 0.5] - [1, -1] + [1, -0.5]
    np.testing.assert_allclose(new, [0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(uplink["control_delta"], new - c_i, rtol=1e-6)
    # the server adds |S|/N times the mean control delta (3 of 10 clients this round)
    absorbed, _ = term.absorb(c, {"control_delta": np.array([0.2, 0.4], np.float32)},
                              Context(1, None, 0, num_clients=10, num_aggregated=3))
    np.testing.assert_allclose(absorbed, c + 0.3 * np.array([0.2, 0.4]), rtol=1e-6)
    assert term.layout_bound and list(term.downlink(c, Context(1, None, 0))) == ["control"]


def test_scaffold_control_is_the_mean_raw_gradient_with_plain_sgd(model):
    """Option II with SGD: c_i+ = mean of the uncorrected gradients of the K local steps."""
    spec = param_spec(model)
    params = get_flat(model, spec)
    rng = np.random.default_rng(1)
    c, c_i = (rng.standard_normal(spec.num_params).astype(np.float32) for _ in range(2))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    term = scaffold()
    local = local_round(model, params, {"control": c})
    correction = term.objective(local, c_i)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    raw = []
    for _ in range(3):
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        raw.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
        correction(model, None).backward()
        optimizer.step()
    delta = get_flat(model, spec) - params
    _, new = term.finish(local._replace(delta=delta, steps=3), c_i)
    np.testing.assert_allclose(new, np.mean(raw, axis=0), rtol=1e-4, atol=1e-6)
    set_flat(model, spec, params)


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_scaffold_counts_the_step_momentum_sgd_really_took(model, momentum):
    """With momentum the weights move by more than lr per gradient; for a constant gradient
    (a linear objective) c_i+ must still be exactly that gradient, as with plain SGD."""
    spec = param_spec(model)
    params = get_flat(model, spec)
    rng = np.random.default_rng(3)
    c, c_i = (rng.standard_normal(spec.num_params).astype(np.float32) for _ in range(2))
    slope = [torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=torch.float32) for p in model.parameters()]
    term = scaffold()
    local = local_round(model, params, {"control": c})._replace(train=TrainConfig(lr=0.1, momentum=momentum))
    correction = term.objective(local, c_i)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    for _ in range(5):
        optimizer.zero_grad()
        (sum((p * a).sum() for p, a in zip(model.parameters(), slope)) + correction(model, None)).backward()
        optimizer.step()
    _, new = term.finish(local._replace(delta=get_flat(model, spec) - params, steps=5), c_i)
    np.testing.assert_allclose(new, torch.cat([a.reshape(-1) for a in slope]).numpy(), rtol=1e-4, atol=1e-4)
    set_flat(model, spec, params)


def test_fedprox_and_scaffold_presets_carry_their_terms():
    assert len(STRATEGIES.build("fedprox", mu=0.1).terms) == 1
    assert STRATEGIES.build("scaffold").terms[0].layout_bound
