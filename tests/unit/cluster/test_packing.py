"""Memory-aware packing: the reservation from a probe's peak, and the refusals' numbers."""

import pytest

from fedray.cluster.packing import MARGIN, ProbeResult, packing_problems, reservation_gb
from fedray.config import load_config

GIB = 2**30


def test_the_reservation_is_the_peak_with_the_margin_rounded_up():
    probe = ProbeResult(rss_peak=int(1.5 * GIB))
    assert reservation_gb(probe) == pytest.approx(1.5 * MARGIN, abs=0.01)
    assert reservation_gb(probe) >= 1.5 * MARGIN


def test_actors_that_fit_the_nodes_are_not_refused():
    probe = ProbeResult(rss_peak=GIB)  # reserves 1.2 GiB: 3 on a 4 GiB node, 1 on a 2 GiB one
    assert packing_problems(probe, 4, 0.0, {"nodeA": 4 * GIB, "nodeB": 2 * GIB}) == []


def test_too_many_actors_for_the_nodes_memory_are_refused_with_the_numbers():
    probe = ProbeResult(rss_peak=GIB)
    [problem] = packing_problems(probe, 5, 0.0, {"nodeA000": 4 * GIB, "nodeB000": 2 * GIB})
    assert problem.startswith("clients.resources.memory_gb=auto: a probe fit peaked at 1.00 GiB")
    assert "each client actor reserves 1.20 GiB; 5 actors need 6.00 GiB but the nodes fit 4" in problem
    assert "nodeA000: 4.00 GiB -> 3, nodeB000: 2.00 GiB -> 1" in problem
    assert "clients.pool_size<=4" in problem


def test_fractional_gpus_that_overfill_a_card_are_refused():
    probe = ProbeResult(rss_peak=GIB, gpu_peak=30 * GIB, gpu_total=80 * GIB)
    problems = packing_problems(probe, 4, 0.25, {"n": 64 * GIB})
    assert problems == [
        "clients.resources.num_gpus=0.25 puts 4 client actors on one GPU, but a probe fit peaked at "
        "30.00 GiB of the GPU's 80.00 GiB: 2 fit with a 20% margin; set clients.resources.num_gpus>=0.5"]
    assert packing_problems(probe, 4, 0.5, {"n": 64 * GIB}) == []


@pytest.mark.parametrize("override, message", [
    ("clients.resources.memory_gb=lots", "clients.resources.memory_gb must be a number of GiB > 0 or auto"),
    ("server.resources.memory_gb=auto", "memory_gb: auto is measured for clients.resources only"),
])
def test_memory_gb_config_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_a_number_of_gib_becomes_rays_memory_resource():
    cfg = load_config(None, ["clients.resources.memory_gb=1.5"])
    assert cfg.clients.resources.as_ray_options()["memory"] == int(1.5 * GIB)
    assert cfg.clients.resources.as_bundle()["memory"] == int(1.5 * GIB)
