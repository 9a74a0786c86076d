import numpy as np
import pytest
import torch

from fedray.strategy.presets import STRATEGIES
from fedray.transforms import TRANSFORMS, adagrad, adam, chain, clip_by_global_norm, identity, momentum, scale, yogi
from fedray.types import Context

CTX = Context(server_round=1, client_id=None, seed=0)


def run_transform(transform, params, pseudo_grads):
    """Apply `params += transform(-g)` for each g; the server's update rule."""
    params = params.copy()
    state = transform.init(params)
    for r, g in enumerate(pseudo_grads, start=1):
        step, state = transform.apply(-g, state, params, Context(r, None, 0))
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


def reddi(deltas, x, rule, lr, beta1, beta2, tau):
    """Algorithm 2 of Reddi et al. 2021 written out in float64, one coordinate at a time."""
    x = [float(v) for v in x]
    m = [0.0] * len(x)
    v = [tau * tau] * len(x)
    for delta in deltas:
        for i, d in enumerate(float(e) for e in delta):
            m[i] = beta1 * m[i] + (1 - beta1) * d
            if rule == "adagrad":
                v[i] = v[i] + d * d
            else:  # yogi
                diff = v[i] - d * d
                v[i] = v[i] - (1 - beta2) * d * d * (1 if diff > 0 else -1 if diff < 0 else 0)
            x[i] = x[i] + lr * m[i] / (v[i] ** 0.5 + tau)
    return np.array(x)


@pytest.mark.parametrize("rule", ["yogi", "adagrad"])
def test_fedyogi_and_fedadagrad_follow_the_papers_update(problem, rule):
    params, grads = problem
    transform = yogi(0.05, 0.9, 0.99, 1e-3) if rule == "yogi" else adagrad(0.05, 0.9, 1e-3)
    ours, _ = run_transform(transform, params, grads)
    expected = reddi([-g for g in grads], params, rule, 0.05, 0.9, 0.99, 1e-3)
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=2e-6)


def test_identity_is_fedavg_and_chain_state_is_per_transform(problem):
    params, grads = problem
    ours, state = run_transform(identity(), params, grads[:1])
    np.testing.assert_array_equal(ours, params - grads[0])
    chained = chain(momentum(0.5), scale(2.0))
    assert len(chained.init(params)) == 2


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox", "scaffold"])
def test_presets_build_with_their_defaults(name, problem):
    params, grads = problem
    strategy = STRATEGIES.build(name)
    out, _ = run_transform(strategy.server, params, grads)
    assert out.shape == params.shape and np.isfinite(out).all()
    assert not np.array_equal(out, params)
    assert len(strategy.terms) == (1 if name in ("fedprox", "scaffold") else 0)


def test_clip_by_global_norm_bounds_the_norm_and_keeps_the_direction():
    clip = clip_by_global_norm(1.0)
    long = np.array([3.0, 4.0], dtype=np.float32)
    out, _ = clip.apply(long, clip.init(long), long, CTX)
    np.testing.assert_allclose(out, [0.6, 0.8], rtol=1e-6)
    short = np.array([0.3, 0.4], dtype=np.float32)
    assert clip.apply(short, (), short, CTX)[0] is short


def test_a_chain_decodes_its_encoders_last_first():
    def encoder(tag):
        return TRANSFORMS.get("scale")(1.0)._replace(decode=lambda payload, ctx: payload + [tag])

    chained = chain(encoder("a"), scale(2.0), encoder("b"))
    assert chained.decode([], CTX) == ["b", "a"]
    assert chain(scale(2.0)).decode is None


def test_context_generators_are_reproducible_and_distinct_per_round_and_client():
    draw = lambda ctx, tag=0: ctx.rng(tag).standard_normal(3)  # noqa: E731
    a = Context(3, 7, seed=1)
    np.testing.assert_array_equal(draw(a), draw(Context(3, 7, seed=1)))
    others = [Context(4, 7, 1), Context(3, 8, 1), Context(3, None, 1), Context(3, 7, 2)]
    assert all(not np.array_equal(draw(a), draw(o)) for o in others)
    assert not np.array_equal(draw(a), draw(a, tag=1))
