"""Client-level DP pieces: clipping bounds norms, noise has its std, adaptive clipping
finds the quantile, the mean's denominator is fixed."""

import numpy as np
import pytest

from fedray.privacy.accountant import Sampling
from fedray.privacy.clip import CLIP_NORM, UNCLIPPED
from fedray.privacy.mechanism import Participation, adaptive_clip, fixed_clip
from fedray.privacy.noise import FixedDenominatorMean
from fedray.strategy.terms import LocalRound
from fedray.types import Context

RUN = Participation(Sampling("poisson", 1000, 100), rounds=10, account=False)


def test_clipping_bounds_every_update_norm():
    mechanism = fixed_clip(RUN, clip_norm=0.5, noise_multiplier=1.0)
    rng = np.random.default_rng(0)
    for scale in (0.01, 0.1, 1.0, 100.0):
        update = rng.normal(0, scale, 1000).astype(np.float32)
        clipped, _ = mechanism.clip.apply(update, (), update, Context(1, 0, 0))
        norm = float(np.linalg.norm(clipped))
        assert norm <= 0.5 * (1 + 1e-6)
        if np.linalg.norm(update) <= 0.5:
            np.testing.assert_array_equal(clipped, update)  # short updates pass untouched
        else:
            np.testing.assert_allclose(clipped / norm, update / np.linalg.norm(update), rtol=1e-5)


def test_adaptive_clipping_clips_to_the_broadcast_norm():
    mechanism = adaptive_clip(RUN, noise_multiplier=1.0)
    update = np.full(100, 1.0, dtype=np.float32)  # norm 10
    ctx = Context(1, 3, 0, downlink={CLIP_NORM: np.array([2.5], np.float32)})
    clipped, _ = mechanism.clip.apply(update, (), update, ctx)
    assert np.linalg.norm(clipped) == pytest.approx(2.5, rel=1e-6)


def test_noise_has_the_configured_std_and_is_seeded():
    """Noise on the mean has std z C / K (K = expected clients); 200,000 draws put the
    sample std within 0.5% (its standard error is 0.16%)."""
    z, c, k = 1.3, 0.8, 100
    mechanism = fixed_clip(RUN, clip_norm=c, noise_multiplier=z)
    zeros = np.zeros(200_000, dtype=np.float32)
    ctx = Context(7, None, 42)
    noised, _ = mechanism.noise.apply(zeros, (), zeros, ctx)
    assert np.std(noised) == pytest.approx(z * c / k, rel=5e-3)
    assert abs(np.mean(noised)) < 4 * z * c / k / np.sqrt(zeros.size)
    again, _ = mechanism.noise.apply(zeros, (), zeros, ctx)
    np.testing.assert_array_equal(noised, again)  # same round, same draw
    other, _ = mechanism.noise.apply(zeros, (), zeros, Context(8, None, 42))
    assert not np.array_equal(noised, other)


def test_the_mean_divides_by_the_expected_clients_and_ignores_example_counts():
    mean = FixedDenominatorMean(3, denominator=4)
    mean.add(0, 100.0, np.array([1, 2, 3], np.float32))
    mean.add(1, 1.0, np.array([3, 2, 1], np.float32))
    np.testing.assert_allclose(mean.result()[0], [1, 1, 1])


def run_adaptive(norms_of_round, rounds, quantile, noise_multiplier, seed=0, clients=100):
    """The adaptive-clip term's client and server halves over synthetic update norms."""
    run = Participation(Sampling("poisson", 10 * clients, clients), rounds=rounds, account=False)
    mechanism = adaptive_clip(run, initial_clip_norm=0.1, target_quantile=quantile, learning_rate=0.2,
                              noise_multiplier=noise_multiplier)
    term = mechanism.term
    state = term.init_server(np.zeros(1, np.float32))
    rng = np.random.default_rng(seed)
    history = []
    for r in range(1, rounds + 1):
        downlink = term.downlink(state, Context(r, None, seed))
        reducer = term.reducers(1)[UNCLIPPED]
        for cid, norm in enumerate(norms_of_round(rng, clients)):
            delta = np.zeros(4, np.float32)
            delta[0] = norm
            local = LocalRound(None, None, None, downlink, Context(r, cid, seed), None, delta=delta)
            sent, _ = term.finish(local, ())
            reducer.add(cid, 1.0, sent[UNCLIPPED])
        combined = {UNCLIPPED: reducer.result()[0]}
        state, metrics = term.absorb(state, combined, Context(r, None, seed, num_aggregated=clients))
        history.append(state.clip_norm)
    return np.array(history)


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_adaptive_clipping_settles_at_the_target_quantile(quantile):
    """Norms are log-normal; after 300 rounds the clip norm sits at the norms' quantile
    (within 10%), with noise on the count as Andrew et al. use it (20 clients a round)."""
    def norms(rng, n):
        return rng.lognormal(mean=0.0, sigma=0.5, size=n)

    history = run_adaptive(norms, rounds=200, quantile=quantile, noise_multiplier=1.0, clients=20)
    target = float(np.quantile(np.random.default_rng(99).lognormal(0.0, 0.5, 1_000_000), quantile))
    settled = float(np.median(history[-100:]))
    assert settled == pytest.approx(target, rel=0.1)
    assert history[0] < history[-1]  # it grew from 0.1 to get there


def test_adaptive_clipping_noise_split_is_refused_when_the_count_noise_is_too_small():
    small = Participation(Sampling("poisson", 100, 10), rounds=10, account=False)
    with pytest.raises(ValueError, match=r"must be below 2 x count_stddev = 1"):
        adaptive_clip(small, noise_multiplier=1.0)  # sigma_b = K/20 = 0.5
    assert adaptive_clip(small, noise_multiplier=1.0, count_stddev=2.0).noise_multiplier == 1.0


def test_attacks_measure_what_they_claim():
    import torch

    from fedray.privacy.attacks import cosine, invert_first_layer, roc_auc

    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert roc_auc(np.array([0.0]), np.array([1.0])) == 0.0
    # one example, one SGD step: the first layer's update gives the input back exactly
    torch.manual_seed(0)
    layer, head = torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)
    x = torch.rand(1, 16)
    torch.nn.functional.cross_entropy(head(torch.relu(layer(x))), torch.tensor([2])).backward()
    recovered = invert_first_layer(-0.1 * layer.weight.grad.numpy(), -0.1 * layer.bias.grad.numpy())
    assert cosine(recovered, x[0].numpy()) > 0.9999
