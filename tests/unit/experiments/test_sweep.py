import pytest

from fedray.config import ConfigError
from fedray.experiments.sweep import expand, parse_grid_args, plan_sweep, split_values


@pytest.mark.parametrize(
    "text, values",
    [
        ("0.05,0.1", ["0.05", "0.1"]),
        ("[32],[64, 64]", ["[32]", "[64, 64]"]),
        ("'a,b',c", ["'a,b'", "c"]),
        ("{x: 1, y: 2},{x: 3}", ["{x: 1, y: 2}", "{x: 3}"]),
    ],
)
def test_split_values_respects_brackets_and_quotes(text, values):
    assert split_values(text) == values


def test_grid_args_need_key_and_values():
    assert parse_grid_args(["train.lr=0.1,0.2"]) == {"train.lr": ["0.1", "0.2"]}
    with pytest.raises(ConfigError, match="--grid 'train.lr' must look like key=v1,v2"):
        parse_grid_args(["train.lr"])


def test_expand_names_every_combination():
    runs = expand("exp", {"train.lr": ["0.1", "0.2"], "model.hidden": ["[32]", "[64, 64]"]})
    assert [name for name, _ in runs] == [
        "exp-lr=0.1-hidden=32", "exp-lr=0.1-hidden=64_64", "exp-lr=0.2-hidden=32", "exp-lr=0.2-hidden=64_64"]
    assert runs[1][1] == ("train.lr=0.1", "model.hidden=[64, 64]", "name=exp-lr=0.1-hidden=64_64")


def test_keys_ending_alike_are_named_in_full():
    runs = expand("exp", {"train.momentum": ["0.5"], "server.strategy.momentum": ["0.9"]})
    assert runs[0][0] == "exp-train.momentum=0.5-server.strategy.momentum=0.9"


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_plan_merges_the_yaml_grid_with_grid_args(tmp_path):
    config = write(tmp_path, "name: exp\nsweep:\n  grid:\n    train.lr: [0.05, 0.1]\n    data.alpha: [0.5]\n")
    runs = plan_sweep(config, ["server.rounds=2"], ["data.alpha=0.1,1.0"])
    assert [r.name for r in runs] == ["exp-lr=0.05-alpha=0.1", "exp-lr=0.05-alpha=1.0",
                                      "exp-lr=0.1-alpha=0.1", "exp-lr=0.1-alpha=1.0"]
    last = runs[-1].cfg
    assert (last.name, last.train.lr, last.data.alpha, last.server.rounds) == ("exp-lr=0.1-alpha=1.0", 0.1, 1.0, 2)


def test_plan_reports_every_bad_combination_at_once(tmp_path):
    config = write(tmp_path, "name: exp\n")
    with pytest.raises(ConfigError) as err:
        plan_sweep(config, [], ["train.lr=0.1,-1,0", "trian.lr=1"])
    assert err.value.problems == [
        "override 'trian.lr=1': trian: unknown key",  # every run has it: said once
        "exp-train.lr=-1-trian.lr=1: train.lr must be > 0, got -1.0 (set by override train.lr=-1)",
        "exp-train.lr=0-trian.lr=1: train.lr must be > 0, got 0.0 (set by override train.lr=0)",
    ]


def test_nothing_to_sweep(tmp_path):
    with pytest.raises(ConfigError, match="nothing to sweep"):
        plan_sweep(write(tmp_path, "name: exp\n"), [], [])
