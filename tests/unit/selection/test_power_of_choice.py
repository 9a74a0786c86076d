"""Power-of-choice: the highest-loss clients of a size-weighted candidate draw."""

import numpy as np

from fedray.config import load_config
from fedray.selection import SELECTORS, SelectionRequest


def power_of_choice(candidates):
    cfg = load_config(None, [f"server.selection.power_of_choice.candidates={candidates}"])
    return SELECTORS.build("power_of_choice", cfg.server.selection)


def test_picks_the_highest_losses_among_the_candidates(profiles_factory):
    """Replaying the generator gives the candidate draw; the selection is its top 5 by loss."""
    loss = np.linspace(0.1, 3.0, 30)
    profiles = profiles_factory([20] * 30, [1.0] * 30, loss)
    selector, rng = power_of_choice(2.0), np.random.default_rng(0)
    for r in range(1, 20):
        state_before = rng.bit_generator.state
        chosen, _ = selector.select(SelectionRequest(r, np.arange(30), 5, profiles), (), rng)
        replay = np.random.default_rng()
        replay.bit_generator.state = state_before
        candidates = replay.choice(np.arange(30), size=10, replace=False, p=np.full(30, 1 / 30))
        assert sorted(chosen) == sorted(candidates[np.argsort(-loss[candidates])[:5]].tolist())


def test_with_every_client_a_candidate_it_is_the_top_k_by_loss(profiles_factory):
    loss = np.random.default_rng(3).uniform(0, 2, 12)
    profiles = profiles_factory([20] * 12, [1.0] * 12, loss)
    chosen, _ = power_of_choice(10.0).select(SelectionRequest(1, np.arange(12), 4, profiles), (),
                                             np.random.default_rng(0))
    assert sorted(chosen) == sorted(np.argsort(-loss)[:4].tolist())


def test_unseen_clients_come_first(profiles_factory):
    loss = np.array([0.5, np.nan, 2.0, np.nan, 1.0, 0.1])
    profiles = profiles_factory([20] * 6, [1.0] * 6, loss)
    chosen, _ = power_of_choice(3.0).select(SelectionRequest(1, np.arange(6), 3, profiles), (),
                                            np.random.default_rng(0))
    assert sorted(chosen) == [1, 2, 3]


def test_candidates_are_drawn_in_proportion_to_data(profiles_factory):
    sizes = [1] * 10 + [100] * 10
    profiles = profiles_factory(sizes, [1.0] * 20, [1.0] * 20)  # equal losses: order = draw order
    selector, rng = power_of_choice(1.0), np.random.default_rng(4)
    counts = np.zeros(20)
    for r in range(200):
        chosen, _ = selector.select(SelectionRequest(r, np.arange(20), 5, profiles), (), rng)
        counts[chosen] += 1
    assert counts[10:].sum() > 20 * counts[:10].sum()
