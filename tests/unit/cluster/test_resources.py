from fedray.cluster.resources import actor_demand, unplaceable


def test_actor_demand_from_options():
    options = {"num_cpus": 0.5, "num_gpus": 0.25, "resources": {"silo_a": 1}}
    assert actor_demand(options) == {"CPU": 0.5, "GPU": 0.25, "silo_a": 1.0}
    assert actor_demand({"num_cpus": 0, "num_gpus": 0}) == {}


def test_everything_fits():
    nodes = [{"CPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}]
    demands = [("a", {"CPU": 1.0}), ("b", {"CPU": 1.0, "GPU": 0.5}), ("c", {"CPU": 1.0, "GPU": 0.5})]
    assert unplaceable(demands, nodes) == []


def test_missing_custom_resource_is_named():
    missing = unplaceable([("client actor 0", {"CPU": 1.0, "silo_b": 1.0})], [{"CPU": 4.0, "silo_a": 1.0}])
    assert len(missing) == 1
    assert "client actor 0" in missing[0] and "no node offers 'silo_b'" in missing[0]


def test_per_node_packing_is_respected():
    # 4 CPUs in total, but no single node can hold a 3-CPU actor.
    missing = unplaceable([("big", {"CPU": 3.0})], [{"CPU": 2.0}, {"CPU": 2.0}])
    assert missing and "big needs {CPU: 3}" in missing[0]


def test_too_many_actors_for_the_cluster():
    demands = [(f"client actor {i}", {"CPU": 1.0}) for i in range(3)]
    missing = unplaceable(demands, [{"CPU": 2.0}])
    assert len(missing) == 1 and "cluster total {CPU: 2}" in missing[0]
