import pytest

from fedray.config import ConfigError, load_config, to_yaml
from fedray.config.schema import Placement, RunConfig


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_valid():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig)
    assert cfg.server.strategy.name == "fedavg"
    assert cfg.clients.placement is Placement.actor_per_client


def test_yaml_then_overrides_take_precedence(tmp_path):
    path = write(tmp_path, "server:\n  rounds: 7\n  clients_per_round: 3\nclients:\n  placement: pool\n")
    cfg = load_config(path, ["server.rounds=9", "clients.resources.num_gpus=0.25",
                             "clients.resources.custom.silo_a=1"])
    assert cfg.server.rounds == 9
    assert cfg.server.clients_per_round == 3
    assert cfg.clients.placement is Placement.pool
    assert cfg.clients.resources.num_gpus == 0.25
    assert cfg.clients.resources.as_ray_options() == {"num_cpus": 1.0, "num_gpus": 0.25,
                                                      "resources": {"silo_a": 1.0}}


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["server.rounds=4", "model.hidden=[8,4]"])
    again = load_config(write(tmp_path, to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("server:\n  rounds: -3\n", "server.rounds must be >= 1, got -3"),
        ("server:\n  clients_per_round: 20\n",
         "server.clients_per_round (20) must be <= clients.num_clients (10)"),
        ("data:\n  alpha: 0\n", "data.alpha must be > 0, got 0.0"),
        ("data:\n  alpha: -1.5\n", "data.alpha must be > 0, got -1.5"),
        ("server:\n  bogus: 1\n", "server.bogus: unknown key"),
        ("trian:\n  lr: 0.1\n", "trian: unknown key"),
        ("train:\n  lr: fast\n", "train.lr: Value 'fast' of type 'str' could not be converted to Float"),
        ("clients:\n  placement: pol\n", "clients.placement: Invalid value 'pol'"),
        ("clients:\n  resources:\n    num_gpus: -1\n", "clients.resources.num_gpus must be >= 0"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("model:\n  peft:\n    r: 0\n", "model.peft.r must be >= 1, got 0"),
        ("model:\n  peft:\n    r: 4\n    rank_tiers: [2, 8]\n",
         "model.peft.rank_tiers must lie in [1, model.peft.r=4], got [2, 8]"),
        ("model:\n  peft:\n    client_ranks: [8, 8]\n",
         "model.peft.client_ranks has 2 ranks for clients.num_clients=10 clients"),
        ("model:\n  peft:\n    rank: 4\n", "model.peft.rank: unknown key"),
        ("model:\n  path: x\n  config: {model_type: llama}\n", "model.path and model.config are exclusive"),
        ("data:\n  seq_len: 1\n", "data.seq_len must be >= 2, got 1"),
        ("train:\n  grad_accum_steps: 0\n", "train.grad_accum_steps must be >= 1, got 0"),
        ("train:\n  mixed_precision: fp8\n", "train.mixed_precision: Invalid value 'fp8'"),
        ("server: [\n", "not valid YAML"),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message
    assert path in message


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "server:\n  rounds: 0\n  bogus: 1\ndata:\n  alpha: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.lr=-1", "nokey=3"])
    problems = info.value.problems
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    for key in ("server.rounds", "server.bogus", "data.alpha", "train.lr", "nokey"):
        assert key in joined


def test_missing_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(missing)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(None, ["server.rounds"])


def test_lora_sections_round_trip(tmp_path):
    cfg = load_config(None, ["model.name=hf_causal_lm", "model.config.model_type=llama",
                             "model.config.hidden_size=64", "model.peft.r=4",
                             "model.peft.target_modules=[q_proj]", "model.dtype=bfloat16"])
    assert cfg.model.peft.r == 4 and cfg.model.config == {"model_type": "llama", "hidden_size": 64}
    assert load_config(write(tmp_path, to_yaml(cfg))) == cfg
    assert load_config(None).model.peft is None
