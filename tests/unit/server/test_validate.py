import numpy as np
import pytest

from fedray.server.validate import update_problem
from fedray.types import ClientResult


def result(update, n=10):
    return ClientResult(client_id=4, server_round=1, num_examples=n, update=update)


def test_a_good_update_passes():
    assert update_problem(result(np.zeros(5, dtype=np.float32)), 5) is None


@pytest.mark.parametrize(
    "update, n, reason",
    [
        (np.array([0, np.nan, 0, 0, 0], dtype=np.float32), 10, "NaN or Inf"),
        (np.array([0, np.inf, 0, 0, 0], dtype=np.float32), 10, "NaN or Inf"),
        (np.zeros(4, dtype=np.float32), 10, r"shape \(4,\), expected \(5,\)"),
        (np.zeros(5, dtype=np.float64), 10, "dtype float64, expected float32"),
        (None, 10, "no update returned"),
        (np.zeros(5, dtype=np.float32), 0, "num_examples=0"),
    ],
)
def test_bad_updates_are_rejected_with_a_reason(update, n, reason):
    problem = update_problem(result(update, n), 5)
    assert problem is not None
    assert __import__("re").search(reason, problem)
