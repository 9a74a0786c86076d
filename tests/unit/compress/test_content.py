"""Content-aware codecs: rules by tensor name, kinds, and the auto choice within a byte budget."""

import numpy as np
import pytest

from fedray.compress import CODECS
from fedray.compress.content import choose, tensor_kind, unmatched_rules
from fedray.types import Context, ParamSpec, payload_bytes

PREFIX = "base_model.model.model.layers.0.self_attn"
LORA = ParamSpec((f"{PREFIX}.q_proj.lora_A.default.weight", f"{PREFIX}.q_proj.lora_B.default.weight",
                  f"{PREFIX}.v_proj.lora_A.default.weight", f"{PREFIX}.v_proj.lora_B.default.weight"),
                 ((8, 64), (64, 8), (8, 64), (32, 8)))
LLAMA = ParamSpec(("model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                   "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
                   "model.layers.0.mlp.up_proj.bias", "model.norm.weight"),
                  ((100, 16), (16,), (16, 16), (32, 16), (32,), (16,)))


def update(spec, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=spec.num_params) * rng.lognormal(0, 1, size=spec.num_params)).astype(np.float32)


def run(transform, spec, x, state=None, server_round=1):
    context = Context(server_round, 2, 0, 4, spec=spec)
    state = transform.init(x) if state is None else state
    payload, state = transform.apply(x, state, x, context)
    return payload, transform.decode(payload, Context(server_round, 2, 0, 4)), state


def test_tensor_kinds_from_names_and_shapes():
    assert [tensor_kind(n, s) for n, s in zip(LORA.names, LORA.shapes)] == ["lora_A", "lora_B"] * 2
    assert [tensor_kind(n, s) for n, s in zip(LLAMA.names, LLAMA.shapes)] == [
        "embedding", "norm", "attention", "weight", "bias", "norm"]
    assert tensor_kind("0.weight", (64, 64)) == "weight" and tensor_kind("0.bias", (64,)) == "bias"


def test_rules_give_each_group_its_codec_and_the_server_needs_no_layout():
    rules = [{"match": r"lora_A", "codec": {"name": "int8"}},
             {"match": r"lora_B", "codec": {"name": "top_k", "args": {"fraction": 0.1}}}]
    t = CODECS.build("content", rules=rules)
    x = update(LORA)
    payload, decoded, state = run(t, LORA, x)
    assert [p.codec for p in payload.parts] == [0, 1]
    a = np.concatenate([x[: 8 * 64], x[8 * 64 + 64 * 8 : 2 * 8 * 64 + 64 * 8]])
    sizes = [payload_bytes(p.payload) for p in payload.parts]
    assert sizes[0] == a.size + 4 * 4  # int8: a byte a value, one scale per 256
    assert sizes[1] == 8 * int(np.ceil(0.1 * (64 * 8 + 32 * 8))) + 4  # top-k: index + value
    # each part: codec index + (offset, size) per tensor + its payload
    assert payload_bytes(payload) == sum(4 + 8 * 2 + s for s in sizes)
    lora_a = np.r_[0:512, 1024:1536]
    assert np.max(np.abs(decoded[lora_a] - x[lora_a])) <= np.abs(x[lora_a]).max() / 127 + 1e-6
    kept_b = np.flatnonzero(decoded[512:1024])
    np.testing.assert_array_equal(decoded[512:1024][kept_b], x[512:1024][kept_b])
    assert state[1].shape == (64 * 8 + 32 * 8,)  # top-k's residual, for the B group only


def test_unmatched_tensors_use_the_default_and_rules_that_match_nothing_are_named():
    t = CODECS.build("content", rules=[{"match": "norm", "codec": {"name": "fp16"}}], default={"name": "int8"})
    payload, decoded, _ = run(t, LLAMA, update(LLAMA))
    assert [p.codec for p in payload.parts] == [0, 1]
    assert payload.parts[0].segments[:, 1].tolist() == [16, 16]  # the two norms
    problems = unmatched_rules([{"match": "norm", "codec": {}}, {"match": "lora_[AB]", "codec": {}}], LLAMA)
    assert len(problems) == 1 and "rules[1].match 'lora_[AB]' matches no tensor" in problems[0]


def test_auto_picks_per_kind_within_the_budget_and_keeps_its_choice():
    t = CODECS.build("content_auto", budget=0.15)
    x = update(LLAMA)
    payload, decoded, state = run(t, LLAMA, x)
    assert payload_bytes(payload) <= 0.15 * x.nbytes
    choice, _ = state
    assert len(choice) == 5  # embedding, norm, attention, weight, bias
    again, _, state_again = run(t, LLAMA, update(LLAMA, 1), state, server_round=2)
    assert state_again[0] == choice and [p.codec for p in again.parts] == [p.codec for p in payload.parts]
    generous = run(CODECS.build("content_auto", budget=1.0), LLAMA, x)[1]
    assert np.sum((generous - x) ** 2) < np.sum((decoded - x) ** 2)


def test_choose_trades_the_least_error_per_byte_and_fills_back():
    errors = np.array([[0.0, 1.0, 10.0], [0.0, 5.0, 6.0]])
    sizes = np.array([[100, 50, 10], [100, 50, 10]])
    assert choose(errors, sizes, 1000) == [0, 0]
    assert choose(errors, sizes, 150) == [1, 0]  # group 0 loses least per byte saved
    assert choose(errors, sizes, 60) == [1, 2]
    # a trade that overshoots the budget is partly taken back by the best upgrade that fits
    assert choose(np.array([[0.0, 9.0]]), np.array([[100, 1]]), 50) == [1]


@pytest.mark.parametrize("args,match", [
    ({"rules": [{"match": "x"}]}, r"rules\[0\] must have exactly 'match' and 'codec'"),
    ({"rules": [{"match": "(", "codec": {"name": "fp16"}}]}, r"rules\[0\].match '\(' is not a regular expression"),
    ({"rules": [{"match": "x", "codec": {"name": "nope"}}]}, r"rules\[0\].codec: Unknown codec 'nope'"),
    ({"rules": [{"match": "x", "codec": {"name": "content"}}]}, "do not nest"),
    ({"rules": [{"match": "x", "codec": {"name": "gain", "args": {"rate": "auto"}}}]}, "give a fixed rate"),
    ({"rules": [{"match": "x", "codec": {"name": "top_k", "args": {"fraction": 0}}}]}, r"fraction must be .* \(0, 1\]"),
])
def test_bad_rules_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        CODECS.build("content", **args)


def test_content_needs_the_layout():
    t = CODECS.build("content", rules=[])
    x = update(LLAMA)
    with pytest.raises(ValueError, match="need the update's tensor layout"):
        t.apply(x, None, x, Context(1, 0, 0, 1))
