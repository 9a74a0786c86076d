"""Quantised frozen bases (QLoRA): 4-/8-bit layers on this machine's CPU, float32 adapters,
the dequantised weights, and the backend check's message."""

import dataclasses

import pytest
import torch

from fedray.config.finetune import QuantizationConfig, QuantType
from fedray.config.schema import ModelConfig, PeftConfig
from fedray.data.text import text_info
from fedray.models.build import build_model
from fedray.models.flat import param_spec
from fedray.models.quantize import backend_problem, dequantized_weights, is_quantized

import bitsandbytes as bnb  # noqa: E402  (a declared dependency: its absence is a failure)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

LLAMA = {  # hidden_size 64: bitsandbytes' 4-bit blocks are 64 weights long
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
}
INFO = text_info(seq_len=16, vocab_size=258)
IDS = torch.tensor([[1, 5, 100, 200, 7, 42, 257, 3]])
QUANTS = [QuantizationConfig(bits=4, type=QuantType.nf4, double_quant=True),
          QuantizationConfig(bits=4, type=QuantType.fp4), QuantizationConfig(bits=8)]


def tiny(q: QuantizationConfig | None) -> ModelConfig:
    return ModelConfig(name="hf_causal_lm", config=dict(LLAMA), quantization=q,
                       peft=PeftConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))


@pytest.mark.parametrize("q", QUANTS, ids=["nf4-double", "fp4", "int8"])
def test_a_quantised_base_trains_float32_adapters_with_the_same_names(q):
    assert backend_problem(q, "cpu", "test") is None  # this machine's bitsandbytes runs on CPU
    model = build_model(tiny(q), INFO, seed=0)
    plain = build_model(tiny(None), INFO, seed=0)
    linears = [m for n, m in model.named_modules() if n.endswith(("mlp.up_proj", "self_attn.k_proj"))]
    assert linears and all(is_quantized(m) for m in linears)
    spec = param_spec(model)
    assert spec == param_spec(plain)  # what travels is unchanged by the base's format
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable)
    # the quantised base computes nearly what the float one does (zero-initialised B: base
    # alone), far nearer than another seed's model
    other = build_model(tiny(None), INFO, seed=1)
    with torch.no_grad():
        quant, ref, far = (m.eval()(input_ids=IDS).logits for m in (model, plain, other))
    assert (quant - ref).abs().mean() < 0.25 * (far - ref).abs().mean()
    model.train()  # after an eval-mode no-grad pass (the server evaluates so), training still works
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert any(p.grad.abs().sum() > 0 for p in trainable)
    # a quantised base is smaller than the float one
    assert model.get_base_model().get_memory_footprint() < plain.get_base_model().get_memory_footprint()


@pytest.mark.parametrize("q", QUANTS, ids=["nf4-double", "fp4", "int8"])
def test_dequantised_weights_are_what_the_quantised_layers_compute(q):
    model = build_model(tiny(q), INFO, seed=0)
    weights = dequantized_weights(model)
    plain = dict(build_model(tiny(None), INFO, seed=0).get_base_model().named_modules())
    name = "model.layers.0.mlp.up_proj"
    assert set(weights) >= {name, "model.layers.1.self_attn.q_proj"}
    assert weights[name].shape == plain[name].weight.shape
    layer = dict(model.named_modules())["base_model.model." + name]
    x = torch.randn(3, LLAMA["hidden_size"])
    with torch.no_grad():
        torch.testing.assert_close(layer(x).float(), x @ weights[name].T, rtol=0.02, atol=0.02)
    # and they are close to the float weights they came from (a quantisation error, not garbage)
    scale = plain[name].weight.abs().max()
    assert (weights[name] - plain[name].weight).abs().max() < 0.25 * scale


def test_an_unsupported_device_is_named_in_the_error(monkeypatch):
    """A backend that cannot run here fails the probe; the message names the device and why."""
    import fedray.models.quantize as quantize

    def broken(*args):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(quantize, "probe_layer", broken)
    problem = backend_problem(QuantizationConfig(bits=4), "cpu", "clients.resources.num_gpus=0")
    assert problem is not None
    assert problem.startswith("model.quantization (bits=4): bitsandbytes")
    assert "on cpu (clients.resources.num_gpus=0)" in problem and "no kernel for this device" in problem


@pytest.mark.parametrize("change, message", [
    ({"peft": None}, "model.quantization freezes the base: set model.peft"),
    ({"name": "mlp"}, "model.quantization needs model.name=hf_causal_lm, got mlp"),
    ({"peft": PeftConfig(aggregation="stack")}, "cannot take model.peft.aggregation=stack"),
    ({"quantization": QuantizationConfig(bits=3)}, "model.quantization.bits must be 4 or 8, got 3"),
])
def test_quantisation_config_errors(change, message):
    cfg = dataclasses.replace(tiny(QuantizationConfig()), **change)
    assert any(message in problem for problem in cfg.errors()), cfg.errors()
