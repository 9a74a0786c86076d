"""The accountant against a second implementation, calibration, and the budget."""

import pytest

from fedray.privacy.accountant import Sampling, calibrate, epsilon, rounds_within

SETTINGS = [(1.0, 0.01, 1000, 1e-5), (0.8, 0.1, 100, 1e-5), (2.0, 0.05, 500, 1e-6)]


@pytest.mark.parametrize("z, q, rounds, delta", SETTINGS)
def test_poisson_epsilon_matches_dp_accounting(z, q, rounds, delta):
    """Opacus's RDP bound against Google's dp-accounting RDP accountant (same orders are
    not guaranteed, so within 3%), and Opacus's PRV against dp-accounting's PLD (both
    numerically tight, within 5%)."""
    import dp_accounting
    from dp_accounting import pld, rdp

    sampling = Sampling("poisson", num_clients=round(100 / q), expected_clients=100)
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    theirs = rdp.RdpAccountant()
    theirs.compose(event, rounds)
    assert epsilon(z, sampling, rounds, delta) == pytest.approx(theirs.get_epsilon(delta), rel=0.03)
    tight = pld.PLDAccountant()
    tight.compose(event, rounds)
    assert epsilon(z, sampling, rounds, delta, "prv") == pytest.approx(tight.get_epsilon(delta), rel=0.05)


def test_without_replacement_is_accounted_by_its_own_analysis():
    """K of N without replacement has its own (replace-one) bound; the Poisson number
    for q = K/N is not it."""
    import dp_accounting
    from dp_accounting import rdp

    sampling = Sampling("without_replacement", num_clients=100, expected_clients=10)
    theirs = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    theirs.compose(dp_accounting.SampledWithoutReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(1.0)), 50)
    ours = epsilon(1.0, sampling, 50, 1e-5)
    assert ours == pytest.approx(theirs.get_epsilon(1e-5), rel=1e-9)
    assert ours != pytest.approx(epsilon(1.0, sampling._replace(kind="poisson"), 50, 1e-5), rel=0.05)


def test_calibration_meets_the_target_and_no_less_noise_would():
    sampling = Sampling("poisson", 1000, 50)
    z = calibrate(2.0, sampling, 100, 1e-5)
    assert epsilon(z, sampling, 100, 1e-5) <= 2.0 < epsilon(z * 0.99, sampling, 100, 1e-5)


def test_rounds_within_a_budget():
    sampling = Sampling("poisson", 1000, 50)
    allowed = rounds_within(4.0, 1.0, sampling, 500, 1e-5)
    assert 0 < allowed < 500
    assert epsilon(1.0, sampling, allowed, 1e-5) <= 4.0 < epsilon(1.0, sampling, allowed + 1, 1e-5)


def test_a_target_that_cannot_be_met():
    with pytest.raises(ValueError, match=r"target_epsilon=1e-06 cannot be met in 10 round\(s\)"):
        calibrate(1e-6, Sampling("poisson", 100, 100), 10, 1e-5)


def test_no_noise_is_no_privacy():
    assert epsilon(0.0, Sampling("poisson", 100, 10), 3, 1e-5) == float("inf")
