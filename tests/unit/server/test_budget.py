"""server.budget_mb: how many rounds fit, when the run stops, what a resume counts."""

import pytest

from fedray.server.budget import MB, CommBudget, estimated_round_bytes


def test_the_estimate_is_every_client_moving_every_parameter_both_ways_in_float32():
    assert estimated_round_bytes(clients_per_round=8, num_params=921_600) == 8 * 2 * 921_600 * 4


def test_rounds_fit_until_the_next_would_overrun():
    budget = CommBudget.start(budget_mb=10, clients_per_round=2, num_params=250_000)  # 4 MB a round
    assert budget.rounds_that_fit() == 2
    assert budget.record(bytes_up=2 * MB, bytes_down=2 * MB)  # 4 MB used, 6 left: one more fits
    assert not budget.record(bytes_up=2 * MB, bytes_down=2 * MB)  # 8 used, 2 left
    assert budget.summary() == {"budget_mb": 10, "used_mb": 8, "round_mb": 4, "stopped_by_budget": False}


def test_a_measured_round_replaces_the_estimate_and_the_largest_one_counts():
    budget = CommBudget.start(budget_mb=10, clients_per_round=2, num_params=250_000)
    budget.record(bytes_up=MB // 2, bytes_down=MB // 2)  # a codec: 1 MB, not the estimated 4
    assert budget.round_bytes == MB and budget.rounds_that_fit() == 9
    budget.record(bytes_up=MB, bytes_down=MB)
    assert budget.round_bytes == 2 * MB and budget.rounds_that_fit() == 3


def test_a_resumed_run_counts_the_rounds_it_already_did():
    budget = CommBudget.start(budget_mb=10, clients_per_round=2, num_params=250_000,
                              used_bytes=6 * MB, measured=3 * MB)
    assert budget.round_bytes == 3 * MB and budget.rounds_that_fit() == 1
    assert "fits 1 round(s)" in budget.describe_start(rounds=5, first_round=3)
    assert "stops after round 3 of 5" in budget.describe_start(rounds=5, first_round=3)


@pytest.mark.parametrize("value", [0, -1.5])
def test_a_budget_must_be_positive(value):
    from fedray.config.schema import ServerConfig

    assert any(f"server.budget_mb must be > 0 or null, got {value}" in e for e in ServerConfig(budget_mb=value).errors())
