import numpy as np
import pytest
import torch

from fedray.config.schema import StrategyConfig
from fedray.strategy.presets import STRATEGIES
from fedray.transforms import adam, chain, identity, momentum, scale


def run_transform(transform, params, pseudo_grads):
    """Apply `params += transform(-g)` for each g; the server's update rule."""
    params = params.copy()
    state = transform.init(params)
    for g in pseudo_grads:
        step, state = transform.apply(-g, state, params)
        params += step
    return params, state


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    params = rng.standard_normal(50).astype(np.float32)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(6)]
    return params, grads


def test_server_adam_matches_torch_adam(problem):
    params, grads = problem
    ours, state = run_transform(adam(lr=0.05, beta1=0.9, beta2=0.99, eps=1e-3), params, grads)
    p = torch.tensor(params.copy(), requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.05, betas=(0.9, 0.99), eps=1e-3)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert state.step == len(grads)


def test_server_momentum_matches_torch_sgd_momentum(problem):
    params, grads = problem
    ours, _ = run_transform(chain(momentum(0.9), scale(0.5)), params, grads)
    p = torch.tensor(params.copy(), requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.5, momentum=0.9)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_identity_is_fedavg_and_chain_state_is_per_transform(problem):
    params, grads = problem
    ours, state = run_transform(identity(), params, grads[:1])
    np.testing.assert_array_equal(ours, params - grads[0])
    chained = chain(momentum(0.5), scale(2.0))
    assert len(chained.init(params)) == 2


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam"])
def test_presets_build_from_config(name, problem):
    params, grads = problem
    transform = STRATEGIES.build(name, StrategyConfig(name=name))
    out, _ = run_transform(transform, params, grads)
    assert out.shape == params.shape and np.isfinite(out).all()
    assert not np.array_equal(out, params)


def test_clip_by_global_norm_bounds_the_norm_and_keeps_the_direction():
    from fedray.transforms import clip_by_global_norm

    clip = clip_by_global_norm(1.0)
    long = np.array([3.0, 4.0], dtype=np.float32)
    out, _ = clip.apply(long, clip.init(long), long)
    np.testing.assert_allclose(out, [0.6, 0.8], rtol=1e-6)
    short = np.array([0.3, 0.4], dtype=np.float32)
    assert clip.apply(short, (), short)[0] is short
