"""Hugging Face causal LMs: checkpoint folders, GGUF conversion, LoRA adapters per rank."""

import json
import re

import numpy as np
import pytest
import torch

from fedray.config.schema import ModelConfig, PeftConfig
from fedray.data.text import text_info
from fedray.data.tokenize import TOKENIZERS
from fedray.models.adapters import FoldedMerges, RankedAdapters, lora_layout
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec, set_flat
from fedray.models.hf import build_base, resolve_checkpoint

LLAMA = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
}
INFO = text_info(seq_len=16, vocab_size=258)
IDS = torch.tensor([[1, 5, 100, 200, 7, 42, 257, 3]])


def tiny(**peft) -> ModelConfig:
    return ModelConfig(name="hf_causal_lm", config=dict(LLAMA), peft=PeftConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"], **peft))


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_only_the_adapters_train_and_they_are_small():
    model = build_model(tiny(), INFO, seed=0)
    spec = param_spec(model)
    assert spec.names and all(".lora_A." in n or ".lora_B." in n for n in spec.names)
    full = sum(p.numel() for p in model.parameters()) - spec.num_params
    assert spec.num_bytes < 0.05 * 4 * full
    layout = lora_layout(spec, model_peft := tiny().peft)
    assert layout.rank == 4 and layout.scaling == model_peft.alpha / model_peft.r


def test_every_process_builds_the_same_base_from_the_seed():
    a, b = (build_model(tiny(), INFO, seed=3).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_model(tiny(), INFO, seed=4).state_dict()
    assert not torch.equal(a["base_model.model.lm_head.weight"], c["base_model.model.lm_head.weight"])


def test_a_checkpoint_folder_loads_its_weights(tmp_path):
    saved = build_model(ModelConfig(name="hf_causal_lm", config=dict(LLAMA)), INFO, seed=0)
    saved.save_pretrained(tmp_path / "ckpt")
    loaded = build_base(ModelConfig(name="hf_causal_lm", path=str(tmp_path / "ckpt")), INFO)
    torch.testing.assert_close(logits(loaded), logits(saved), rtol=0, atol=0)
    with torch.device("meta"):  # the launcher's dry build reads no weights
        dry = build_model(ModelConfig(name="hf_causal_lm", path=str(tmp_path / "ckpt"), peft=PeftConfig()), INFO, 0)
    assert next(dry.parameters()).device.type == "meta"


def test_dtype_applies_to_the_base_and_adapters_stay_float32():
    cfg = tiny()
    cfg.dtype = type(cfg.dtype)("bfloat16")
    model = build_model(cfg, INFO, seed=0)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["base_model.model.lm_head.weight"] == torch.bfloat16
    assert {dtypes[n] for n in param_spec(model).names} == {torch.float32}


def write_tiny_gguf(path, model):
    """A llama GGUF file as llama.cpp writes one: q/k rows permuted for its rotary
    layout, a byte-level BPE vocabulary with one merge and an end-of-text token."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    cfg = model.config
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    spelling = bytes_to_unicode()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([spelling[b] for b in range(256)] + ["<|endoftext|>", "Ġt"])
    writer.add_token_types([1] * 256 + [3, 1])
    writer.add_token_merges(["Ġ t"])
    writer.add_eos_token_id(256)
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf_name, gguf_name in names.items():
            weight = state[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name in heads:
                n = heads[gguf_name]
                weight = weight.reshape(n, 2, weight.shape[0] // n // 2, -1).swapaxes(1, 2).reshape(weight.shape)
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", weight)
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_file_is_converted_once_into_an_equal_checkpoint(tmp_path):
    original = build_model(ModelConfig(name="hf_causal_lm", config=dict(LLAMA)), INFO, seed=0)
    write_tiny_gguf(tmp_path / "tiny.gguf", original)
    cfg = ModelConfig(name="hf_causal_lm", path=str(tmp_path / "tiny.gguf"), cache_dir=str(tmp_path / "cache"))
    folder = resolve_checkpoint(cfg)
    assert folder.parent == tmp_path / "cache" / "gguf" and folder.name.startswith("tiny-")
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_checkpoint(cfg) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    torch.testing.assert_close(logits(build_base(cfg, INFO)), logits(original), rtol=0, atol=0)
    tokenizer = TOKENIZERS.build("model", cfg)
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (258, 256)
    assert tokenizer.encode(["hi there"])[0].tolist() == [104, 105, 257, 104, 101, 114, 101]


@pytest.mark.parametrize(
    "setup, overrides, expected",
    [
        (None, {"path": "{tmp}/nowhere"}, "model.path: no such file or folder: {tmp}/nowhere"),
        ("empty", {"path": "{tmp}/ckpt"}, "model.path: {tmp}/ckpt is not a Hugging Face checkpoint folder (no config.json)"),
        ("bad_json", {"path": "{tmp}/ckpt"}, "model.path: cannot load the checkpoint at {tmp}/ckpt"),
        ("text_file", {"path": "{tmp}/model.bin"}, "model.path: {tmp}/model.bin is a file but not a .gguf"),
        ("bad_gguf", {"path": "{tmp}/model.gguf", "cache_dir": "{tmp}/c"}, "model.path: cannot read the GGUF file {tmp}/model.gguf"),
        (None, {"config": {"hidden_size": 8}}, "model.config needs model_type"),
        (None, {"config": {"model_type": "lama"}}, "model.config: "),
        (None, {}, "model.name=hf_causal_lm needs model.path"),
        (None, {"config": dict(LLAMA, vocab_size=100)}, "the model embeds 100 token ids but the tokenizer"),
        (None, {"config": dict(LLAMA), "peft": PeftConfig(target_modules=["qkv"])}, "model.peft.target_modules=['qkv']"),
    ],
)
def test_bad_models_are_named(tmp_path, setup, overrides, expected):
    (tmp_path / "ckpt").mkdir()
    if setup == "bad_json":
        (tmp_path / "ckpt" / "config.json").write_text("{not json")
    (tmp_path / "model.bin").write_text("x")
    (tmp_path / "model.gguf").write_bytes(b"GGUF but not really")
    fields = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ValueError, match=re.escape(expected.replace("{tmp}", str(tmp_path)))):
        build_model(ModelConfig(name="hf_causal_lm", **fields), INFO, seed=0)


def test_a_lower_rank_adapter_is_the_padded_global_one():
    """Shared scaling makes a rank-2 adapter exactly the leading components of rank 4."""
    model = build_model(tiny(), INFO, seed=0)
    layout = lora_layout(param_spec(model), tiny().peft)
    adapters = RankedAdapters(model, tiny().peft, [2, 4])
    low = np.random.default_rng(0).standard_normal(layout.num_params(2)).astype(np.float32) * 0.1
    spec2 = adapters.activate(2)
    assert spec2.num_params == layout.num_params(2) and all(".rank2." in n for n in spec2.names)
    set_flat(model, spec2, low)
    out_low = logits(model)
    set_flat(model, adapters.activate(4), layout.pad(low, 4))
    torch.testing.assert_close(logits(model), out_low, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(get_flat(model, adapters.activate(2)), low)


def test_folding_a_stack_into_the_base_equals_running_it_as_an_adapter():
    cfg = tiny()
    model = build_model(cfg, INFO, seed=0)
    spec = param_spec(model)
    layout = lora_layout(spec, cfg.peft)
    rng = np.random.default_rng(1)
    parts = [(w, rng.standard_normal(layout.num_params(4)).astype(np.float32) * 0.1) for w in (3.0, 1.0)]
    stacked = layout.stack(parts)
    # reference: PEFT running a rank-8 adapter holding the stack
    from fedray.models.adapters import add_lora
    reference = add_lora(build_model(ModelConfig(name="hf_causal_lm", config=dict(LLAMA)), INFO, seed=0), cfg.peft, rank=8)
    set_flat(reference, param_spec(reference), stacked)
    # folded: the same stack added to the base weights, the adapter's B left at zero
    set_flat(model, spec, np.zeros(spec.num_params, dtype=np.float32))
    merged = FoldedMerges()
    assert merged.catch_up(model, layout, [stacked]) == stacked.nbytes
    assert merged.catch_up(model, layout, [stacked]) == 0  # each merge is folded once
    torch.testing.assert_close(logits(model), logits(reference), rtol=1e-4, atol=1e-5)
