"""Config fields for clusters: pinned clients, label selectors, the server's worker group, sweeps."""

import pytest

from fedray.config import ConfigError, load_config


def cfg(*overrides):
    return load_config(None, ["clients.num_clients=4", "server.clients_per_round=4", *overrides])


def test_pinned_clients_get_their_own_resources():
    c = cfg("clients.pinned=[{clients: [1, 2], resources: {num_cpus: 0.5, num_gpus: 0.25, "
            "custom: {silo_a: 1}, label_selector: {zone: 'in(a, b)'}}}]")
    assert c.clients.actor_resources(0) is c.clients.resources
    options = c.clients.actor_resources(2).as_ray_options()
    assert options == {"num_cpus": 0.5, "num_gpus": 0.25, "resources": {"silo_a": 1.0},
                       "label_selector": {"zone": "in(a, b)"}}


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["clients.pinned=[{clients: [4]}]"], "clients.pinned[0].clients [4] out of range 0..3"),
        (["clients.pinned=[{clients: [0, 1]}, {clients: [1]}]"],
         "clients.pinned[1].clients [1] are already pinned by an earlier entry"),
        (["clients.placement=pool", "clients.pinned=[{clients: [0]}]"],
         "clients.pinned needs clients.placement: actor_per_client"),
        (["clients.resources.label_selector={silo: 'a b'}"], "clients.resources.label_selector.silo must be"),
        (["clients.resources.label_selector={'-bad': a}"], "label_selector key '-bad' is not a valid label name"),
        (["server.foundation_model.model.name=mlp", "server.foundation_model.num_workers=2", "server.foundation_model.resources.num_cpus=0"],
         "server.foundation_model.resources must request some resource"),
        (["server.foundation_model.placement_strategy=SPREADD"], "server.foundation_model.placement_strategy"),
        (["sweep.grid={train.lr: []}"], "sweep.grid.train.lr must list at least one value"),
    ],
)
def test_cluster_field_errors_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as err:
        cfg(*overrides)
    assert expected in str(err.value)


@pytest.mark.parametrize("value", ["a", "!a", "in(a,b)", "!in(a, b-2)", "A_1.x"])
def test_valid_label_selector_values(value):
    assert cfg(f"clients.resources.label_selector={{silo: '{value}'}}").clients.resources.label_selector == {
        "silo": value}
