"""Gang placement's bookkeeping: bundles from actor options, and warm gangs taken whole."""

from __future__ import annotations

from fedray.client.pool import WarmActors
from fedray.cluster.gang import _bundle


def test_an_actors_bundle_is_its_own_request_without_zeros():
    options = {"num_cpus": 0.5, "num_gpus": 0, "memory": 2**30, "resources": {"silo_a": 1},
               "label_selector": {"silo": "b"}, "max_restarts": 3}
    assert _bundle(options) == {"CPU": 0.5, "memory": float(2**30), "silo_a": 1.0}
    assert _bundle({"num_cpus": 0, "num_gpus": 0, "max_restarts": 3}) == {}


def test_a_warm_gang_is_taken_only_if_all_its_actors_fit_the_next_run():
    """A gang partly used would keep its other bundles reserved: the run takes whole gangs
    that fit its free slots, in the order kept, and the rest are evicted."""
    warm = WarmActors()
    warm._idle = [("g1", [("cpu", "a1"), ("cpu", "a2")]), ("g2", [("cpu", "b1"), ("gpu", "b2")]),
                  ("g3", [("gpu", "c1")])]
    fits, rest = warm._fitting(["cpu", "cpu", "gpu"])
    assert fits == [("g1", [(0, "a1"), (1, "a2")]), ("g3", [(2, "c1")])]
    assert rest == [("g2", [("cpu", "b1"), ("gpu", "b2")])]
    assert warm.take(["cpu", "cpu", "gpu"]) == fits and warm._idle == rest and len(warm) == 2
