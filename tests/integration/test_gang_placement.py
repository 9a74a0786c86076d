"""Client actors are placed as one gang: two pools that cannot both fit never each hold part."""

from __future__ import annotations

import pytest
from ray.util.placement_group import placement_group_table

from fedray.client.pool import ClientPool
from fedray.cluster.errors import ClusterError
from fedray.launcher import prepare, run
from tests.conftest import small_config


def test_two_pools_that_cannot_both_fit_are_placed_one_whole_then_the_other(ray_cluster, tmp_path):
    """Each pool's 3 actors ask for 1 CPU each and the cluster has 4: one pool gets all
    three, the other none (placed one at a time, its first actor would take the fourth
    CPU and hold it); once the first pool is gone, the second starts."""
    cfg = small_config(tmp_path, "clients.pool_size=3")
    dataset = prepare(cfg).dataset
    a, b = f"gang-a-{tmp_path.name}", f"gang-b-{tmp_path.name}"
    first = ClientPool(cfg, dataset, a)
    second = ClientPool(cfg, dataset, b)
    groups = [first.gang.group, second.gang.group]
    try:
        assert len(first.describe()) == 3  # placed: every actor up with its shards
        # a run that cannot be placed meanwhile fails naming what it waits for, and gives it back
        waiting = small_config(tmp_path / "waiting", "clients.pool_size=3", "ray.start_timeout_s=5")
        with pytest.raises(ClusterError, match=r"wait for 3 x \{'CPU': 1\.0\} \(all at once"):
            run(prepare(waiting), console=lambda line: None)
        assert {g["state"] for g in placement_group_table().values()
                if g["name"].startswith("fedray/") and g["name"].endswith("/clients")} == {"REMOVED"}
        assert second.unplaced() == "3 x {'CPU': 1.0}"
        assert placement_group_table(groups[1])["state"] == "PENDING"  # holds none of its bundles
        first.shutdown()
        assert len(second.describe()) == 3 and second.unplaced() is None
        assert placement_group_table(groups[1])["state"] == "CREATED"
    finally:
        for pool in (first, second):
            if pool.gang.group is not None:
                pool.shutdown()
    assert [placement_group_table(g)["state"] for g in groups] == ["REMOVED", "REMOVED"]
