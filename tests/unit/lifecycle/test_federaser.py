"""FedEraser's rebuild against hand computations, with a stand-in for calibration training."""

import numpy as np
import pytest

from fedray.lifecycle.federaser import calibrated_update, federaser
from fedray.lifecycle.ledger import model_hash, read_round, round_table

SIZES = (2, 3)


def stored_round(server_round, base, updates):
    """A ledger round: (client, weight, update) triples applied to `base`."""
    after = base + sum(w * u for _, w, u in updates) / sum(w for _, w, _ in updates)
    table = round_table(server_round, [(c, w, np.asarray(u, np.float32)) for c, w, u in updates],
                        model_hash(base), model_hash(after.astype(np.float32)), "float32", SIZES)
    return read_round(table, f"round {server_round}")


def plain_step(params, aggregate, server_round):
    return params + aggregate


def test_calibration_keeps_the_direction_and_takes_the_stored_length_per_tensor():
    fresh = np.array([3.0, 4.0, 0.0, 0.0, 2.0], np.float32)
    out = calibrated_update(fresh, np.array([10.0, 1.0]), SIZES)
    np.testing.assert_allclose(out, [6.0, 8.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(calibrated_update(np.zeros(5, np.float32), np.array([1.0, 1.0]), SIZES), 0.0)


def test_the_first_round_uses_the_stored_updates_then_calibrates():
    start = np.zeros(5, np.float32)
    a, b, bad = (np.full(5, v, np.float32) for v in (1.0, 3.0, 100.0))
    round1 = stored_round(1, start, [(0, 1.0, a), (1, 3.0, b), (2, 2.0, bad)])
    # round 2 started from the poisoned model; its stored updates only lend their norms
    poisoned = np.asarray(start + (a + 3 * b + 2 * bad) / 6, np.float32)
    round2 = stored_round(2, poisoned, [(0, 1.0, 2 * a), (2, 1.0, bad)])
    calls = []

    def calibrate(server_round, params, clients):
        calls.append((server_round, params.copy(), clients))
        return {c: np.array([1.0, 0.0, 0.0, 0.0, -1.0], np.float32) for c in clients}

    steps = []
    result = federaser(start, [round2, round1], {2}, calibrate, plain_step, steps.append)
    exact = (a + 3 * b) / 4  # round 1 without client 2, from the stored updates
    assert [(s.server_round, s.clients, s.calibrated) for s in steps] == [(1, (0, 1), False), (2, (0,), True)]
    assert len(calls) == 1 and calls[0][0] == 2 and calls[0][2] == [0]
    np.testing.assert_allclose(calls[0][1], exact)
    # client 0's fresh direction, scaled to its stored per-tensor norms: ||2a|| over 2 and 3 entries
    expected = exact + np.array([2 * np.sqrt(2), 0, 0, 0, -2 * np.sqrt(3)], np.float32)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_a_round_of_only_forgotten_clients_is_skipped():
    start = np.zeros(5, np.float32)
    only = stored_round(1, start, [(3, 1.0, np.ones(5, np.float32))])
    result = federaser(start, [only], {3}, lambda *a: pytest.fail("nobody to calibrate"), plain_step)
    np.testing.assert_array_equal(result, start)


def test_clients_that_fail_calibration_are_left_out_of_the_average():
    start = np.ones(5, np.float32)
    diverged = stored_round(1, np.zeros(5, np.float32), [(0, 1.0, np.ones(5, np.float32)),
                                                         (1, 9.0, np.ones(5, np.float32))])
    fresh = {0: np.array([1, 1, 0, 0, 0], np.float32)}  # client 1 failed
    result = federaser(start, [diverged], set(), lambda r, p, clients: fresh, plain_step)
    np.testing.assert_allclose(result, start + calibrated_update(fresh[0], diverged.layer_norms[0], SIZES))


def test_the_server_step_is_the_runs():
    start = np.zeros(5, np.float32)
    one = stored_round(1, start, [(0, 1.0, np.ones(5, np.float32))])
    result = federaser(start, [one], set(), None, lambda p, agg, r: p + 0.5 * agg)
    np.testing.assert_allclose(result, 0.5)
