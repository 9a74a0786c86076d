"""Staleness weights: s(0) = 1, non-increasing, as configured."""

import pytest

from fedray.config import load_config
from fedray.strategy.staleness import STALENESS


@pytest.mark.parametrize("name, overrides, expected", [
    ("inverse_sqrt", [], [1.0, 2 ** -0.5, 3 ** -0.5, 0.5]),
    ("polynomial", ["server.staleness_exponent=1"], [1.0, 0.5, 1 / 3, 0.25]),
    ("constant", [], [1.0, 1.0, 1.0, 1.0]),
])
def test_staleness_weights(name, overrides, expected):
    cfg = load_config(None, [f"server.staleness={name}", *overrides]).server
    weight = STALENESS.build(name, cfg)
    assert [weight(tau) for tau in range(4)] == pytest.approx(expected)


def test_unknown_staleness_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown staleness weighting 'sqrt'; choose one of \['constant', 'inverse_sqrt', 'polynomial'\]"):
        STALENESS.get("sqrt")
