"""Selection among 100,000 clients: deterministic for a seed, different for another."""

import copy
import functools

import numpy as np
import pytest

from fedray.config import load_config
from fedray.selection import SELECTORS, ClientProfiles, Outcome, SelectionRequest
from fedray.types import ClientResult

NUM_CLIENTS, PER_ROUND = 100_000, 100


@functools.cache
def profiles(seed=0):
    rng = np.random.default_rng([seed, 1])
    examples = (np.floor(rng.lognormal(1.0, 1.0, NUM_CLIENTS)) + 5).astype(np.int64)
    compute = examples * 0.01 * rng.lognormal(0.0, 0.6, NUM_CLIENTS)
    return ClientProfiles.create(examples, compute + rng.lognormal(0.0, 0.5, NUM_CLIENTS), compute,
                                 rng.choice(np.array(["low", "mid", "high"], dtype=object), NUM_CLIENTS))


@functools.cache
def selection_config(name, overrides):
    return load_config(None, [f"server.selection.name={name}", *overrides]).server.selection


def selections(name, seed, rounds=3, overrides=()):
    """The ids chosen in each of `rounds` rounds, each chosen client's result recorded as
    the round loop does (so Oort's utilities and exploration move between rounds)."""
    selector = SELECTORS.build(name, selection_config(name, overrides))
    known = copy.deepcopy(profiles())
    state, rng = selector.init(NUM_CLIENTS), np.random.default_rng([seed, 0x5E1EC7])
    available = np.arange(NUM_CLIENTS, dtype=np.int64)
    chosen_per_round = []
    for server_round in range(1, rounds + 1):
        chosen, state = selector.select(SelectionRequest(server_round, available, PER_ROUND, known), state, rng)
        chosen_per_round.append(list(chosen))
        for cid in chosen:
            loss = 1.0 + (cid % 7) / 7
            known.record_round(ClientResult(cid, server_round, int(known.num_examples[cid]), train_loss=loss,
                                            metrics={"loss_sq": loss * loss}),
                               float(known.expected_duration_s[cid]), 0.0, 0.0, 0, 1)
            known.record_outcome(cid, Outcome.aggregated)
    return chosen_per_round


@pytest.mark.parametrize("name, overrides", [
    ("random", ()), ("oort", ()), ("power_of_choice", ()), ("deadline", ()),
    ("pareto", ("server.selection.pareto.candidates=100",)),  # a front over 10,000 candidates
])
def test_selection_among_100k_clients_is_deterministic_for_a_seed(name, overrides):
    first = selections(name, seed=0, overrides=overrides)
    assert first == selections(name, seed=0, overrides=overrides)
    assert first != selections(name, seed=1, overrides=overrides)
    for chosen in first:
        assert len(set(chosen)) == len(chosen) >= PER_ROUND and all(0 <= c < NUM_CLIENTS for c in chosen)
