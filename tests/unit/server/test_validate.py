import math
import re

import numpy as np
import pytest

from fedray.config.schema import ValidationConfig
from fedray.server.validate import norm_problem, update_problem


def test_a_good_update_passes_and_reports_its_norm():
    problem, norm = update_problem(np.array([3, 4, 0], dtype=np.float32), 10, 3)
    assert problem is None and norm == pytest.approx(5.0)


@pytest.mark.parametrize(
    "update, n, reason",
    [
        (np.array([0, np.nan, 0, 0, 0], dtype=np.float32), 10, "NaN or Inf"),
        (np.array([0, np.inf, 0, 0, 0], dtype=np.float32), 10, "NaN or Inf"),
        (np.full(5, 3e38, dtype=np.float32), 10, "NaN or Inf"),  # overflows: absurd anyway
        (np.zeros(4, dtype=np.float32), 10, r"shape \(4,\), expected \(5,\)"),
        (np.zeros(5, dtype=np.float64), 10, "dtype float64, expected float32"),
        (None, 10, "no update returned"),
        (np.zeros(5, dtype=np.float32), 0, "num_examples=0"),
    ],
)
def test_bad_updates_are_rejected_with_a_reason(update, n, reason):
    problem, norm = update_problem(update, n, 5)
    assert problem is not None and re.search(reason, problem)
    assert math.isnan(norm)


def test_norm_far_above_the_median_is_rejected():
    cfg = ValidationConfig(max_norm_ratio=10.0, min_reference=3)
    history = [1.0, 2.0, 3.0]
    assert norm_problem(19.9, history, cfg) is None
    assert "is 10.5x the median 2" in norm_problem(21.0, history, cfg)


def test_norm_check_waits_for_a_reference_and_can_be_disabled():
    assert norm_problem(1e6, [1.0, 1.0], ValidationConfig(min_reference=3)) is None
    assert norm_problem(1e6, [1.0] * 10, ValidationConfig(max_norm_ratio=None)) is None
