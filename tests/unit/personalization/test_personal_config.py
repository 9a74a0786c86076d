"""Personalisation in a run's config: combinations that make no sense are errors naming the key."""

import pytest

from fedray.config import load_config
from fedray.config.errors import ConfigError
from fedray.launcher import component_problems, prepare

FEDPER = "clients.personalization={name: fedper, args: {patterns: ['%s']}}"


def cfg_with(tmp_path, *overrides):
    return load_config(None, [f"output_dir={tmp_path}", "model.hidden=[16]", "clients.num_clients=4",
                              "server.clients_per_round=4", *overrides])


def test_a_personalised_run_counts_only_the_shared_parameters(tmp_path):
    shared = prepare(cfg_with(tmp_path, FEDPER % "2")).num_params
    assert shared == 64 * 16 + 16  # digits' 64 pixels into the shared hidden layer; the head stays home
    assert prepare(cfg_with(tmp_path, "server.strategy.name=local")).num_params == 0


def test_fedper_pattern_matching_nothing_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"clients.personalization.args.patterns: pattern 'head' matches no "
                                          r"parameter of the model \(its tensors: 0.weight, 0.bias, 2.weight"):
        prepare(cfg_with(tmp_path, FEDPER % "head"))


def test_fedbn_on_a_model_without_norm_layers(tmp_path):
    with pytest.raises(ConfigError, match="clients.personalization: fedbn keeps no tensor of model.name=mlp local"):
        prepare(cfg_with(tmp_path, "clients.personalization={name: fedbn}"))


def test_ditto_with_the_local_strategy(tmp_path):
    problems = component_problems(cfg_with(tmp_path, "server.strategy.name=local",
                                           "clients.personalization={name: ditto, args: {lam: 0.1}}"))
    assert problems == ["clients.personalization: ditto pulls a personal model to the global one, but "
                        "server.strategy.name: local has no global model; use one or the other"]


def test_personalisation_of_a_lora_run_is_refused(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.name=hf_causal_lm", "model.peft={r: 4}",
                             "clients.personalization={name: fedbn}", "data.dataset=shakespeare"])
    assert any(p.startswith("clients.personalization / server.strategy.name: fedbn personalises the whole model, "
                            "but model.peft trains LoRA adapters") for p in component_problems(cfg))


def test_a_personal_adapter_needs_a_lora_run_with_one_rank(tmp_path):
    plain = component_problems(cfg_with(tmp_path, "clients.personalization={name: personal_adapter}"))
    assert plain == ["clients.personalization: personal_adapter needs a LoRA run (model.peft), but model.name=mlp "
                     "trains its whole model; use fedper, fedrep, ditto or fedbn"]
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.name=hf_causal_lm",
                             "model.peft={r: 4, aggregation: stack}", "clients.personalization={name: personal_adapter}",
                             "data.dataset=shakespeare"])
    assert "clients.personalization: personal_adapter needs model.peft.aggregation other than stack (stack folds " \
           "the shared adapter into the base each round)" in component_problems(cfg)


def test_fedrep_refuses_dp_sgd(tmp_path):
    cfg = cfg_with(tmp_path, "clients.personalization={name: fedrep, args: {patterns: ['2']}}",
                   "train.dp={noise_multiplier: 1.0}")
    assert any("fedrep trains its head outside DP-SGD's accounting" in p for p in component_problems(cfg))


def test_local_refuses_pieces_that_act_on_what_travels(tmp_path):
    problems = component_problems(cfg_with(tmp_path, "server.strategy.name=local", "clients.codec.name=top_k",
                                           "server.privacy={name: fixed_clip, args: {clip: 1.0, noise: 0.5}}"))
    assert "server.strategy.name: local sends nothing between clients and server, so clients.codec, " \
           "server.privacy would act on nothing; drop it or federate" in problems
