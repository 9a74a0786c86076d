"""The explicit table of classes a checkpoint may construct, and plug-ins' declared state types."""

import numpy as np
import pytest

from examples.custom_algorithm.algorithm import GuardState, SpikeState, damp_spikes
from fedray.config.schema import ComponentConfig
from fedray.server.serialize import CheckpointError, decode, encode
from fedray.server.state_types import FEDRAY_STATE_TYPES, StateTypes, is_record_type
from tests.conftest import small_config

PLUGIN = "examples.custom_algorithm.algorithm"


@pytest.mark.parametrize("name", sorted(FEDRAY_STATE_TYPES))
def test_every_entry_of_fedrays_table_is_a_record_class(name):
    assert is_record_type(StateTypes().resolve(name)), name


def test_a_run_with_plug_ins_may_hold_the_state_classes_they_declare(tmp_path):
    cfg = small_config(tmp_path, f"clients.transforms=[{{name: '{PLUGIN}:damp_spikes'}}]",
                       f"server.transforms=[{{name: '{PLUGIN}:norm_guard'}}]")
    types = StateTypes.of(cfg)
    assert types.allows(SpikeState) and types.allows(GuardState)
    state = (SpikeState(2, 0.5), GuardState(1, np.float64(0.25)))
    with pytest.raises(TypeError, match=rf"cannot checkpoint a {PLUGIN}:SpikeState .*declares the state classes"):
        encode(state)  # fedray's table alone: no run could load it back
    data = encode(state, types)
    assert decode(data, "f", types=types) == state
    with pytest.raises(CheckpointError, match=f"it names '{PLUGIN}:SpikeState', which is not a state type"):
        decode(data, "f")  # a run whose config does not name the plug-in


def test_a_declaration_that_is_not_record_classes_names_the_config_key(tmp_path, monkeypatch):
    monkeypatch.setattr(damp_spikes, "state_types", (dict,))
    cfg = small_config(tmp_path)
    cfg.clients.transforms = [ComponentConfig(f"{PLUGIN}:damp_spikes")]
    with pytest.raises(ValueError, match=r"clients.transforms\[0\].name: .*state_types must be a tuple of NamedTuple"):
        StateTypes.of(cfg)
