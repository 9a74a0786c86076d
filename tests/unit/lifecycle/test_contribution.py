"""Contribution evaluation: Shapley axioms, GTG-Shapley against exact Shapley, leave-one-out."""

import numpy as np
import pytest

from fedray.config.sections import ComponentConfig
from fedray.lifecycle.contribution import CONTRIBUTIONS, RoundGame, exact_shapley, gtg_shapley, leave_one_out

DIM = 8
TARGET = np.linspace(-1.0, 1.0, DIM).astype(np.float32)


def distance_utility(params):
    """A concave, non-additive utility: minus the distance to the optimum."""
    return -float(np.linalg.norm(params - TARGET))


def round_of(*updates, weights=None):
    """base 0; updates as given; equal weights unless said otherwise."""
    weights = [1.0] * len(updates) if weights is None else weights
    return np.zeros(DIM, np.float32), weights, [np.asarray(u, np.float32) for u in updates]


def good(scale=1.0, seed=0):
    """An update towards the optimum, with a little client noise."""
    return scale * TARGET + np.random.default_rng(seed).normal(0, 0.05, DIM).astype(np.float32)


def values(valuer, base, weights, updates, utility=distance_utility, seed=0):
    game = RoundGame(base, weights, updates, utility, valuer.normalize)
    return valuer.value(game, np.random.default_rng(seed)).values, game


def test_exact_shapley_of_an_additive_game_is_each_clients_own_share():
    # a linear utility under `total` makes V(S) = c.base + sum_{i in S} w_i c.D_i / W:
    # every marginal is constant, so each method gives exactly w_i c.D_i / W
    c = np.arange(DIM, dtype=np.float64)
    base, weights, updates = round_of(good(seed=1), good(0.5, seed=2), -good(seed=3), weights=[1.0, 2.0, 3.0])
    expected = [w * float(c @ u) / 6.0 for w, u in zip(weights, updates)]
    for method in (exact_shapley, gtg_shapley, leave_one_out):
        got, _ = values(method(normalize="total"), base, weights, updates, utility=lambda p: float(c @ p))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_clients", [4, 5])
def test_gtg_shapley_matches_exact_shapley(num_clients):
    rng = np.random.default_rng(num_clients)
    updates = [good(scale, seed=i) for i, scale in enumerate(rng.uniform(0.2, 1.5, num_clients))]
    updates[-1] = rng.normal(0, 0.8, DIM)  # a noisy client makes the game far from additive
    base, weights, updates = round_of(*updates, weights=list(rng.integers(10, 100, num_clients)))
    exact, _ = values(exact_shapley(), base, weights, updates)
    # no early stop: 2,000 guided permutations put the Monte-Carlo error near 1 %
    approx, _ = values(gtg_shapley(epsilon=0.0, max_permutations=2000, tolerance=0.0), base, weights, updates)
    assert np.max(np.abs(approx - exact)) < 0.03 * np.max(np.abs(exact))
    assert np.argsort(approx).tolist() == np.argsort(exact).tolist()


@pytest.mark.parametrize("method", [exact_shapley(), gtg_shapley(epsilon=1e-4)], ids=["exact", "gtg"])
def test_values_add_up_to_the_rounds_gain(method):
    base, weights, updates = round_of(good(seed=1), good(0.3, seed=2), good(2.0, seed=3), np.ones(DIM))
    got, game = values(method, base, weights, updates)
    gain = game.value(range(4)) - game.value(())
    assert got.sum() == pytest.approx(gain, abs=1e-4 if method is not exact_shapley else 1e-9)


def test_identical_clients_get_equal_values():
    twin = good(seed=7)
    base, weights, updates = round_of(twin, good(0.4, seed=8), twin.copy(), np.full(DIM, 0.3))
    exact, _ = values(exact_shapley(), base, weights, updates)
    assert exact[0] == pytest.approx(exact[2], abs=1e-12)
    approx, _ = values(gtg_shapley(epsilon=0.0, max_permutations=400, tolerance=0.01), base, weights, updates)
    assert approx[0] == pytest.approx(approx[2], abs=0.05 * np.max(np.abs(exact)))


@pytest.mark.parametrize("method", [exact_shapley, gtg_shapley, leave_one_out])
def test_a_zero_update_is_a_null_player(method):
    base, weights, updates = round_of(good(seed=1), np.zeros(DIM), good(0.6, seed=2), good(1.2, seed=3))
    got, _ = values(method(normalize="total"), base, weights, updates)
    assert got[1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(got[[0, 2, 3]] > 0.01)


def test_a_zero_update_dilutes_the_subset_average():
    # under GTG-Shapley's own sub-models (normalised by the coalition's weight) a client
    # that sent nothing halves its partner's step: worth less than nothing, never more
    base, weights, updates = round_of(good(seed=1), np.zeros(DIM), good(0.6, seed=2))
    got, _ = values(exact_shapley(), base, weights, updates)
    assert got[1] < 0 and got[1] == min(got)


@pytest.mark.parametrize("method", [exact_shapley(), gtg_shapley(), leave_one_out()], ids=["exact", "gtg", "loo"])
def test_a_noisy_client_gets_the_lowest_value(method):
    noise = np.random.default_rng(5).normal(0, 1.0, DIM)
    base, weights, updates = round_of(good(seed=1), good(0.5, seed=2), noise, good(0.8, seed=3), good(seed=4))
    got, _ = values(method, base, weights, updates)
    assert np.argmin(got) == 2 and got[2] < 0


def test_gtg_skips_a_round_that_gained_nothing():
    base, weights, updates = round_of(good(seed=1), good(seed=2))
    game = RoundGame(base, weights, updates, lambda p: 0.5)
    result = gtg_shapley(epsilon=1e-3).value(game, np.random.default_rng(0))
    assert result.skipped and np.all(result.values == 0)
    assert game.evaluations == 2  # V(empty) and V(N) only


def test_gtg_truncation_saves_evaluations():
    # five clients that each almost reach the optimum: after the first member joins,
    # a permutation is within epsilon of V(N) and stops evaluating
    base, weights, updates = round_of(*(TARGET * 0.999 for _ in range(5)))
    counts = {}
    for eps in (0.0, 0.05):
        _, game = values(gtg_shapley(epsilon=eps, max_permutations=50), base, weights, updates)
        counts[eps] = game.evaluations
    assert counts[0.05] < counts[0.0] <= 2 ** 5


def test_coalition_models_follow_the_formula():
    base = np.full(3, 1.0, np.float32)
    updates = [np.array([1.0, 0, 0], np.float32), np.array([0, 3.0, 0], np.float32), np.array([0, 0, 6.0], np.float32)]
    subset = RoundGame(base, [1.0, 2.0, 3.0], updates, distance_utility, "subset")
    total = RoundGame(base, [1.0, 2.0, 3.0], updates, distance_utility, "total")
    np.testing.assert_allclose(subset.model([0, 1]), [1 + 1 / 3, 1 + 2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(total.model([0, 1]), [1 + 1 / 6, 1 + 1, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(subset.model([]), base)


def test_registry_checks_the_methods_arguments():
    with pytest.raises(ValueError, match=r"server.contribution: .*unknown argument 'epsilom'"):
        CONTRIBUTIONS.build_component("server.contribution", ComponentConfig("gtg_shapley", {"epsilom": 0.1}))
    with pytest.raises(ValueError, match=r"Unknown contribution method 'shapley'"):
        CONTRIBUTIONS.build_component("server.contribution", ComponentConfig("shapley", {}))
    with pytest.raises(ValueError, match=r"normalize must be one of \['subset', 'total'\]"):
        CONTRIBUTIONS.build_component("server.contribution", ComponentConfig("leave_one_out", {"normalize": "x"}))


def test_contribution_and_ledger_settings_are_checked():
    from fedray.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, ["server.contribution.budget=-1", "server.contribution.utility=f1",
                           "server.ledger.every=1", "model.peft={aggregation: stack}"])
    problems = "\n".join(err.value.problems)
    assert "server.contribution.utility" in problems and "f1" in problems
    assert "server.contribution.budget must be >= 0, got -1.0" in problems
    assert "server.ledger and server.contribution need every update in the global adapter's layout" in problems
    assert load_config(None, ["server.ledger.every=1", "model.peft={aggregation: mean}"]).server.ledger.every == 1
