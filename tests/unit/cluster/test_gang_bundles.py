"""Gang placement's bookkeeping: a bundle per actor from its resources, and warm gangs taken whole."""

from __future__ import annotations

from fedray.client.pool import WarmActors
from fedray.cluster.gang import plan_bundles
from fedray.config.resources import ResourcesConfig


def test_each_actor_gets_its_own_request_as_a_bundle_and_one_asking_nothing_gets_none():
    pinned = ResourcesConfig(num_cpus=0.5, memory=2**30, custom={"silo_a": 1}, label_selector={"silo": "b"})
    free = ResourcesConfig(num_cpus=0.0)
    bundle_of, bundles, selectors = plan_bundles([pinned, free, ResourcesConfig(num_gpus=0.25)])
    assert bundle_of == [0, None, 1]
    assert bundles == [{"CPU": 0.5, "memory": float(2**30), "silo_a": 1.0}, {"CPU": 1.0, "GPU": 0.25}]
    assert selectors == [{"silo": "b"}, {}]


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
