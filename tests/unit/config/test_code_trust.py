"""The trust boundary for code: which config values name code, and who vouches for them."""

import pytest

from fedray.config.errors import ConfigError
from fedray.config.load import load_run_config, to_yaml
from fedray.config.trust import AllowCode, code_paths, config_tree, is_dotted
from tests.conftest import small_config

PLUGIN = "examples.custom_algorithm.algorithm"


@pytest.mark.parametrize("text, dotted", [
    ("pkg.module:attr", True), ("os:system", True), ("fedavg", False), ("s3://bucket/runs", False),
    ("127.0.0.1:6379", False), ("localhost:6379", False), ("os:system ", False), ("a:b.c", False),
])
def test_what_counts_as_a_dotted_path(text, dotted):
    assert is_dotted(text) is dotted


def test_code_paths_finds_code_in_lists_and_component_args():
    tree = {"server": {"strategy": {"name": "fedavg", "args": {"inner": "evil.mod:run"}}},
            "clients": {"transforms": [{"name": "fedray_clip", "args": {}}, {"name": f"{PLUGIN}:damp_spikes"}]},
            "output_dir": "s3://bucket/x"}
    assert code_paths(tree) == {"server.strategy.args.inner": "evil.mod:run",
                                "clients.transforms[1].name": f"{PLUGIN}:damp_spikes"}


@pytest.mark.parametrize("overrides", [
    (), (f"clients.transforms=[{{name: '{PLUGIN}:damp_spikes', args: {{limit: 2.0}}}}]", "clients.placement=pool",
         "server.strategy.args={inner: 'evil.mod:run', steps: [1, 2]}", "server.selection.name=oort"),
])
def test_config_tree_is_omegaconfs_container_of_the_config(tmp_path, overrides):
    """The walk `StateTypes.of` and `AllowCode.check` read code paths from gives exactly
    OmegaConf's plain container (enums by name), without OmegaConf's cost."""
    from omegaconf import OmegaConf

    cfg = small_config(tmp_path, *overrides)
    tree = config_tree(cfg)
    assert tree == OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert tree["clients"]["placement"] == "pool"
    if overrides:
        assert code_paths(tree) == {"clients.transforms[0].name": f"{PLUGIN}:damp_spikes",
                                    "server.strategy.args.inner": "evil.mod:run"}


def test_allow_code_covers_a_module_its_submodules_or_one_path():
    allow = AllowCode(["examples.custom_algorithm", "other:one"])
    assert allow.covers(f"{PLUGIN}:damp_spikes") and allow.covers("other:one")
    assert not allow.covers("other:two") and not allow.covers("examples.custom_algorithmic:x")
    assert not AllowCode().covers("os:system")


def run_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(small_config(tmp_path, f"clients.transforms=[{{name: '{PLUGIN}:damp_spikes'}}]")))
    return path


def test_a_run_directorys_config_names_code_only_when_the_user_allows_it(tmp_path):
    path = run_config(tmp_path)
    with pytest.raises(ConfigError, match=rf"clients.transforms\[0\].name = {PLUGIN}:damp_spikes: this "
                                          rf"configuration names code.*--allow-code {PLUGIN}") as caught:
        load_run_config(path)
    assert str(path) in str(caught.value)
    assert load_run_config(path, [PLUGIN]).clients.transforms[0].name == f"{PLUGIN}:damp_spikes"
    # naming the same path again on the command line vouches for it too
    again = load_run_config(path, (), [f"clients.transforms=[{{name: '{PLUGIN}:damp_spikes'}}]"])
    assert again.clients.transforms[0].name == f"{PLUGIN}:damp_spikes"
