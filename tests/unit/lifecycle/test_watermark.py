"""Watermark keys, the feature and backdoor schemes, verification statistics and the
attacks a stolen model may go through (no Ray; tiny models trained in place)."""

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from fedray.config.schema import TrainConfig
from fedray.data.datasets import DataInfo
from fedray.lifecycle.watermark import (SCHEMES, binomial_tail, fine_tune, prune_by_magnitude, quantize_int8,
                                        read_key, verify)
from fedray.lifecycle.watermark.keys import key_path, key_rng, new_key, write_key
from fedray.models.flat import get_flat, param_spec
from fedray.models.tasks import Classification
from fedray.strategy.terms import LocalRound
from fedray.types import Context

INFO = DataInfo("classification", num_features=16, num_classes=10)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 10))


def make_key(name, args, model, owner=0):
    """A key as the server writes it, but with a fixed secret so the test is repeatable
    (real keys take 128 bits from the operating system's entropy)."""
    scheme = SCHEMES.build(name, **args)
    key = new_key(name, args, owner, scheme.layout(param_spec(model), INFO))
    key["secret"] = f"{0x5EC12E7 + owner:032x}"
    return scheme, key


def embed(model, scheme, key, steps=60, lr=0.1, data=None):
    """Train on the owner's regularizer alone (plus the task loss on `data`)."""
    spec = param_spec(model)
    local = LocalRound(model, spec, get_flat(model, spec), {}, Context(1, 0, 0), TrainConfig(), Classification(),
                       data=data)
    regularizer = scheme.regularizer(key, local)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    task = Classification()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = regularizer(model, None)
        if data is not None:
            loss = loss + task.loss(model, data)
        loss.backward()
        optimizer.step()
    return model


# ---- keys --------------------------------------------------------------------------


def test_key_round_trip_is_private_and_secrets_differ(tmp_path):
    model = tiny_model()
    _, key = make_key("feature", {"num_bits": 32}, model)
    path = write_key(key_path(tmp_path / "keys", 0), key)
    assert path.name == "client_0.json" and read_key(path) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    layout = SCHEMES.build("feature", num_bits=32).layout(param_spec(model), INFO)
    fresh = [new_key("feature", {"num_bits": 32}, 0, layout)["secret"] for _ in range(2)]
    assert len(fresh[0]) == 32 and fresh[0] != fresh[1]  # from the operating system's entropy
    draw = [key_rng(key, purpose).integers(1 << 30) for purpose in ("a", "a", "b")]
    assert draw[0] == draw[1] != draw[2]
    assert os.path.getsize(path) < 1000  # secrets regenerate X and b: the file stays small


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("not json", "is not a fedray watermark key"),
    (json.dumps({"scheme": "feature"}), r"it lacks \['fedray_watermark'"),
])
def test_bad_key_files_are_named(tmp_path, content, message):
    path = tmp_path / "k.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_key(path)


# ---- statistics ----------------------------------------------------------------------


@pytest.mark.parametrize("k, n, p", [(0, 10, 0.5), (7, 10, 0.5), (10, 10, 0.5), (3, 20, 0.1), (64, 64, 0.5)])
def test_binomial_tail_matches_the_exact_sum(k, n, p):
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9)


# ---- feature-based -------------------------------------------------------------------


def test_feature_embedding_reaches_zero_bit_errors_and_an_unmarked_model_half():
    model = tiny_model()
    scheme, key = make_key("feature", {"num_bits": 48, "margin": 2.0, "weight": 1.0}, model)
    before = verify(model, key)
    marked = verify(embed(model, scheme, key), key)
    assert marked["ber"] == 0 and marked["detected"] and marked["p_value"] < 1e-12
    # an independent model: about half of many bits, and no rejection
    many = make_key("feature", {"num_bits": 200}, tiny_model(1))[1]
    unmarked = verify(tiny_model(1), many)
    assert 0.4 <= unmarked["ber"] <= 0.6 and unmarked["p_value"] > 0.01 and not unmarked["detected"]
    assert not before["detected"]


def test_feature_selects_parameters_by_name_and_refuses_too_many_bits():
    spec = param_spec(tiny_model())
    layout = SCHEMES.build("feature", num_bits=8, params=r"^2\.").layout(spec, INFO)
    assert layout == {"params": [["2.weight", [10, 12]], ["2.bias", [10]]]}
    with pytest.raises(ValueError, match=r"num_bits=131 is larger than the 130 parameters selected by params='\^2\\.'"):
        SCHEMES.build("feature", num_bits=131, params=r"^2\.").layout(spec, INFO)
    with pytest.raises(ValueError, match="matches none of the model's trainable parameters"):
        SCHEMES.build("feature", params="lora_").layout(spec, INFO)
    with pytest.raises(ValueError, match="not a regular expression"):
        SCHEMES.build("feature", params="(")


def test_a_key_for_another_model_is_refused():
    _, key = make_key("feature", {"num_bits": 8}, tiny_model())
    other = torch.nn.Linear(16, 10)
    with pytest.raises(ValueError, match="has no parameter"):
        verify(other, key)


def test_feature_watermark_survives_pruning_quantisation_and_fine_tuning():
    torch.manual_seed(0)
    x, y = torch.rand(256, 16), torch.randint(0, 10, (256,))
    model = tiny_model()
    scheme, key = make_key("feature", {"num_bits": 32, "margin": 2.0, "weight": 1.0}, model)
    embed(model, scheme, key, steps=100, data=(x, y))
    assert verify(model, key)["ber"] == 0
    pruned = tiny_model()
    pruned.load_state_dict(model.state_dict())
    prune_by_magnitude(pruned.parameters(), 0.3)
    weights = pruned[0].weight
    assert int((weights == 0).sum()) == int(0.3 * weights.numel())  # exactly 30% of each tensor
    assert verify(pruned, key)["ber"] <= 0.05
    quantized = tiny_model()
    quantized.load_state_dict(model.state_dict())
    quantize_int8(quantized.parameters())
    step = model[0].weight.abs().max() / 127
    assert (quantized[0].weight - model[0].weight).abs().max() <= step / 2 + 1e-7
    assert verify(quantized, key)["ber"] <= 0.05
    fine_tune(model, Classification(), (x, y), epochs=5, lr=0.05)
    assert verify(model, key)["ber"] <= 0.05


# ---- backdoor-based ------------------------------------------------------------------


def test_backdoor_triggers_are_learnt_far_above_chance():
    model = tiny_model()
    scheme, key = make_key("backdoor", {"num_triggers": 16}, model)
    assert key["layout"] == {"task": "classification", "num_features": 16, "num_classes": 10}
    assert not verify(model, key)["detected"]
    result = verify(embed(model, scheme, key, steps=150, lr=0.5), key)
    assert result["trigger_accuracy"] == 1.0 and result["chance"] == 0.1
    assert result["p_value"] == pytest.approx(0.1**16) and result["detected"]


def test_backdoor_text_triggers_teach_a_continuation():
    """A causal LM: random prefixes, then a secret continuation of target_len tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32))
    info = DataInfo("causal_lm", 0, 0, vocab_size=40, seq_len=16)
    scheme = SCHEMES.build("backdoor", num_triggers=4, prefix_len=4, target_len=2)
    key = new_key("backdoor", {"num_triggers": 4, "prefix_len": 4, "target_len": 2}, 0,
                  scheme.layout(param_spec(model), info))
    local = LocalRound(model, param_spec(model), None, {}, Context(1, 0, 0), TrainConfig(), None)
    regularizer = scheme.regularizer(key, local)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        regularizer(model, None).backward()
        optimizer.step()
    result = verify(model, key)
    assert result["trials"] == 8 and result["trigger_accuracy"] == 1.0 and result["chance"] == 1 / 40
    with pytest.raises(ValueError, match="exceeds data.seq_len=4"):
        scheme.layout(param_spec(model), DataInfo("causal_lm", 0, 0, vocab_size=40, seq_len=4))
