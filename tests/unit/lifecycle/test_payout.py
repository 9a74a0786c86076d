"""The incentive payout: proportional to non-negative cumulative contributions."""

import numpy as np
import pytest

from fedray.lifecycle.payout import client_columns, cumulative, payout_table, payouts


def test_the_budget_is_shared_by_positive_contributions():
    np.testing.assert_allclose(payouts(np.array([0.3, -0.2, 0.1, 0.0]), 100.0), [75.0, 0.0, 25.0, 0.0])
    assert payouts(np.array([0.3, 0.1, 0.6]), 10.0).sum() == pytest.approx(10.0)


def test_nobody_is_paid_when_nobody_contributed():
    np.testing.assert_array_equal(payouts(np.array([-0.1, 0.0, np.nan]), 100.0), [0.0, 0.0, 0.0])


def test_rounds_add_up_per_client():
    rows = [{"client_id": 0, "value": 0.1}, {"client_id": 2, "value": -0.3}, {"client_id": 0, "value": 0.2}]
    total, rounds = cumulative(rows, 3)
    np.testing.assert_allclose(total, [0.3, 0.0, -0.3])
    np.testing.assert_array_equal(rounds, [2, 0, 1])
    columns = client_columns(rows, 3, budget=50.0)
    np.testing.assert_allclose(columns["payout"], [50.0, 0.0, 0.0])
    assert "payout" not in client_columns(rows, 3, budget=0.0)


def test_the_table_ranks_clients_by_contribution():
    table = payout_table([0, 1, 2], [0.1, 0.3, -0.2], 100.0)
    lines = table.splitlines()
    assert lines[0] == "| client | contribution | payout | share |"
    assert lines[2] == "| 1 | 0.3000 | 75.00 | 75.0% |"
    assert lines[3] == "| 0 | 0.1000 | 25.00 | 25.0% |"
    assert lines[4] == "| 2 | -0.2000 | 0.00 | 0.0% |"
