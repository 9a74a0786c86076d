import pytest

from fedray.cluster.resources import Demand, Node, label_matches, run_demands, unplaceable
from fedray.config import load_config
from fedray.config.schema import ResourcesConfig


def test_demand_from_resources_config():
    res = ResourcesConfig(num_cpus=0.5, num_gpus=0.25, custom={"silo_a": 1}, label_selector={"zone": "a"})
    demand = Demand.of("x", res)
    assert demand.resources == {"CPU": 0.5, "GPU": 0.25, "silo_a": 1.0}
    assert demand.label_selector == {"zone": "a"}
    assert ResourcesConfig(num_cpus=0, num_gpus=0).as_bundle() == {}


def test_everything_fits():
    nodes = [Node({"CPU": 2.0}), Node({"CPU": 2.0, "GPU": 1.0})]
    demands = [Demand("a", {"CPU": 1.0}), Demand("b", {"CPU": 1.0, "GPU": 0.5}), Demand("c", {"CPU": 1.0, "GPU": 0.5})]
    assert unplaceable(demands, nodes) == []


def test_missing_custom_resource_is_named():
    missing = unplaceable([Demand("client actor 0", {"CPU": 1.0, "silo_b": 1.0})], [Node({"CPU": 4.0, "silo_a": 1.0})])
    assert len(missing) == 1
    assert "client actor 0" in missing[0] and "no node offers 'silo_b'" in missing[0]


def test_per_node_packing_is_respected():
    # 4 CPUs in total, but no single node can hold a 3-CPU actor.
    missing = unplaceable([Demand("big", {"CPU": 3.0})], [Node({"CPU": 2.0}), Node({"CPU": 2.0})])
    assert missing == ["big needs {CPU: 3}; no single node is that large"]


def test_too_many_actors_for_the_cluster():
    demands = [Demand(f"client actor {i}", {"CPU": 1.0}) for i in range(3)]
    missing = unplaceable(demands, [Node({"CPU": 2.0})])
    assert len(missing) == 1 and "matching nodes total {CPU: 2}" in missing[0]


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ({"silo": "a"}, {"silo": "a"}, True),
        ({"silo": "a"}, {"silo": "b"}, False),
        ({"silo": "a"}, {}, False),
        ({"silo": "!a"}, {"silo": "b"}, True),
        ({"silo": "!a"}, {}, True),
        ({"silo": "in(a, b)"}, {"silo": "b"}, True),
        ({"silo": "in(a,b)"}, {"silo": "c"}, False),
        ({"silo": "!in(a,b)"}, {"silo": "c"}, True),
        ({"silo": "!in(a,b)"}, {"silo": "a"}, False),
        ({"silo": "a", "gpu": "h100"}, {"silo": "a", "gpu": "a100"}, False),
    ],
)
def test_label_selector_semantics(selector, labels, expected):
    assert label_matches(selector, labels) is expected


def test_label_selectors_pick_nodes_and_missing_labels_are_named():
    nodes = [Node({"CPU": 1.0}, {"silo": "a"}), Node({"CPU": 8.0}, {"silo": "b"})]
    # Two 1-CPU actors need silo a, which has one CPU: the second one cannot run,
    # although silo b has CPUs to spare.
    demands = [Demand(f"client actor {i}", {"CPU": 1.0}, {"silo": "a"}) for i in range(2)]
    assert len(unplaceable(demands, nodes)) == 1
    missing = unplaceable([Demand("c", {"CPU": 1.0}, {"silo": "z"})], nodes)
    assert missing == ["c needs {CPU: 1} on a node labelled {silo: z}; no node has labels matching {silo: z}"]


def test_constrained_demands_are_placed_first():
    # The unpinned actor could take silo a's only CPU; pinned ones go first.
    nodes = [Node({"CPU": 1.0, "silo_a": 1.0}), Node({"CPU": 1.0})]
    demands = [Demand("free", {"CPU": 1.0}), Demand("pinned", {"CPU": 1.0, "silo_a": 1.0})]
    assert unplaceable(demands, nodes) == []


def cfg(*overrides):
    return load_config(None, ["clients.num_clients=3", "server.clients_per_round=3", *overrides])


def test_run_demands_follow_pins_and_worker_strategy():
    demands = run_demands(cfg(
        "clients.pinned=[{clients: [1], resources: {num_cpus: 1, custom: {silo_a: 1}}}]",
        "server.foundation_model.model.name=mlp", "server.foundation_model.num_workers=2", "server.foundation_model.resources.num_gpus=1",
        "server.foundation_model.resources.num_cpus=0", "server.foundation_model.placement_strategy=STRICT_SPREAD",
    ))
    by_label = {d.label: d for d in demands}
    assert by_label["client actor 1"].resources == {"CPU": 1.0, "silo_a": 1.0}
    assert by_label["client actor 0"].resources == {"CPU": 1.0}
    spread = [d for d in demands if d.spread_group]
    assert len(spread) == 2 and all(d.resources == {"GPU": 1.0} for d in spread)
    two_gpu_nodes = [Node({"CPU": 4.0, "GPU": 1.0}), Node({"CPU": 4.0, "GPU": 1.0, "silo_a": 1.0})]
    assert unplaceable(demands, two_gpu_nodes) == []
    one_big_node = [Node({"CPU": 8.0, "GPU": 2.0, "silo_a": 1.0})]
    missing = unplaceable(demands, one_big_node)
    assert missing == ["foundation model ranks (STRICT_SPREAD) bundle 1 needs {GPU: 1}; "
                       "STRICT_SPREAD needs a different node for every bundle"]


def test_strict_pack_needs_one_node_for_all_bundles():
    demands = run_demands(cfg("server.foundation_model.model.name=mlp", "server.foundation_model.num_workers=2", "server.foundation_model.resources.num_gpus=1",
                              "server.foundation_model.placement_strategy=STRICT_PACK"))
    two_gpu_nodes = [Node({"CPU": 4.0, "GPU": 1.0}), Node({"CPU": 4.0, "GPU": 1.0})]
    missing = unplaceable(demands, two_gpu_nodes)
    assert len(missing) == 1 and "all 2 bundles on one node needs {CPU: 2, GPU: 2}" in missing[0]
    assert unplaceable(run_demands(cfg("server.foundation_model.model.name=mlp", "server.foundation_model.num_workers=2", "server.foundation_model.resources.num_gpus=1",
                                       "server.foundation_model.placement_strategy=PACK")), two_gpu_nodes) == []
