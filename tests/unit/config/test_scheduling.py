"""Scheduling config: every bad value is reported with its key."""

import pytest

from fedray.config import ConfigError, load_config


@pytest.mark.parametrize("overrides, message", [
    (["server.mode=async", "server.buffer_size=11"],
     "server.buffer_size (11) must be <= server.clients_per_round (10) with server.mode=async"),
    (["server.mode=async", "server.buffer_size=2", "server.min_clients=3"],
     "server.min_clients (3) must be <= server.buffer_size (2) with server.mode=async"),
    (["server.mode=sometimes"], "server.mode: Invalid value 'sometimes'"),
    (["server.buffer_size=0"], "server.buffer_size must be >= 1, got 0"),
    (["server.max_staleness=-1"], "server.max_staleness must be >= 0 or null, got -1"),
    (["server.deadline_s=0"], "server.deadline_s must be > 0 or null, got 0.0"),
    (["server.staleness_exponent=-1"], "server.staleness_exponent must be >= 0"),
    (["server.selection.oort.exploration=1.5"], "server.selection.oort.exploration must be in [0, 1], got 1.5"),
    (["server.selection.oort.pacer_step=0"], "server.selection.oort.pacer_step must be >= 1, got 0"),
    (["server.selection.oort.preferred_percentile=0"], "server.selection.oort.preferred_percentile must be in (0, 100]"),
    (["server.selection.deadline.overcommit=-0.1"], "server.selection.deadline.overcommit must be >= 0"),
    (["server.selection.pareto.weight=2"], "server.selection.pareto.weight must be in [0, 1], got 2.0"),
    (["server.selection.pareto.cost=dollars"], "server.selection.pareto.cost: Invalid value 'dollars'"),
    (["server.selection.pareto.prices.gpu=-1"], "server.selection.pareto.prices must be >= 0, got {'gpu': -1.0}"),
    (["server.selection.power_of_choice.candidates=0.5"], "server.selection.power_of_choice.candidates must be >= 1"),
    (["clients.profiles.seconds_per_example=0"], "clients.profiles.seconds_per_example must be > 0, got 0.0"),
    (["clients.profiles.compute=guessed"], "clients.profiles.compute: Invalid value 'guessed'"),
    (["clients.availability.online_fraction=0"], "clients.availability.online_fraction must be in (0, 1], got 0.0"),
    (["clients.max_failures=0"], "clients.max_failures must be >= 1 or null, got 0"),
])
def test_bad_scheduling_values_name_their_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["server.buffer_size=0", "server.selection.pareto.weight=-1",
                           "clients.profiles.speed_sigma=-2"])
    assert len(err.value.problems) == 3


def test_async_mode_round_trips_through_yaml(tmp_path):
    from fedray.config import to_yaml

    cfg = load_config(None, ["server.mode=async", "server.buffer_size=3"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    assert "mode: async" in path.read_text()
    assert load_config(path).server.mode.value == "async"
