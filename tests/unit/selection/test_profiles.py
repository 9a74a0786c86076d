"""Client profiles: what a round records, the estimates selectors read, clients.parquet."""

import numpy as np
import pyarrow as pa
import pytest

from fedray.selection.profiles import ClientProfiles, Outcome, clients_table
from fedray.types import ClientResult


def ok_result(cid, server_round, loss=0.5, n=40, size=100):
    return ClientResult(cid, server_round, num_examples=n, payloads={"delta": np.zeros(size, dtype=np.float32)},
                        train_loss=loss, wall_s=0.2, metrics={"loss_sq": loss * loss + 0.01})


def test_a_round_is_recorded_in_the_clients_row():
    profiles = ClientProfiles.create(np.array([40, 10, 7]), np.array([3.0, 1.0, 9.0]), np.array([2.0, 0.5, 8.0]))
    profiles.record_round(ok_result(1, 4), duration_s=2.5, compute_s=2.0, transfer_s=0.5,
                          bytes_down=400, examples_trained=80)
    profiles.record_outcome(1, Outcome.aggregated)
    assert profiles.times_selected.tolist() == [0, 1, 0]
    assert profiles.times_aggregated[1] == 1 and profiles.last_round[1] == 4
    assert profiles.num_examples[1] == 40  # as reported
    assert profiles.last_bytes_up[1] == 400 and profiles.last_bytes_down[1] == 400
    assert profiles.examples_per_s[1] == pytest.approx(80 / 0.2)
    assert profiles.last_loss_sq[1] == pytest.approx(0.26)
    np.testing.assert_array_equal(profiles.duration_estimate(), [3.0, 2.5, 9.0])
    np.testing.assert_array_equal(profiles.compute_estimate(), [2.0, 2.0, 8.0])
    utility = profiles.statistical_utility()
    assert np.isnan(utility[[0, 2]]).all() and utility[1] == pytest.approx(40 * np.sqrt(0.26))


def test_failures_in_a_row_stop_selection_until_a_success():
    profiles = ClientProfiles.create(np.array([5, 5]), np.ones(2))
    failed = ClientResult(0, 1, error="boom")
    for r in range(3):
        profiles.record_round(failed, 0.1, 0.0, 0.1, 400, 0)
        profiles.record_outcome(0, Outcome.failed)
    assert profiles.failures[0] == profiles.consecutive_failures[0] == 3
    assert profiles.eligible(3).tolist() == [False, True]
    assert profiles.eligible(None).tolist() == [True, True]
    assert np.isnan(profiles.last_train_loss[0])  # a failure teaches no loss
    profiles.record_outcome(0, Outcome.late)
    assert profiles.consecutive_failures[0] == 0 and profiles.failures[0] == 3
    assert profiles.times_late[0] == 1


def test_clients_table_has_one_row_per_client_keyed_by_id():
    profiles = ClientProfiles.create(np.array([3, 4, 5]), np.ones(3), client_type=np.array(["a", "b", "a"], dtype=object))
    table = clients_table(profiles, {"sim_speed_factor": np.array([1.0, 2.0, 0.5])})
    assert table.num_rows == 3 and table.column_names[0] == "client_id"
    assert table["client_id"].to_pylist() == [0, 1, 2]
    assert table["client_type"].type == pa.string()
    assert table["sim_speed_factor"].to_pylist() == [1.0, 2.0, 0.5]
    assert {"last_duration_s", "examples_per_s", "failures", "last_train_loss", "last_round"} <= set(table.column_names)
    with pytest.raises(AssertionError):
        clients_table(profiles, {"num_examples": np.zeros(3)})  # one column, one owner
