"""The clients' model: SmolLM2-135M cut to its first four transformer layers, with LoRA.

It keeps SmolLM2's tokenizer, embeddings (tied to the output head) and final
norm, so its logits are over the same 49,152 tokens as the server's full
SmolLM2 (knowledge transfer compares them token id by token id), at about a
third of the compute per token. Named in the config as
`model.name: examples.smollm2_fedfm.student:first_layers`, with `model.path`
pointing at the SmolLM2 checkpoint and `model.peft` at the adapters.
"""

from __future__ import annotations

import dataclasses

from fedray.config.schema import ModelConfig
from fedray.data.datasets import DataInfo

NUM_LAYERS = 4
"""Transformer layers kept, from the bottom (SmolLM2-135M has 30)."""


def first_layers(cfg: ModelConfig, info: DataInfo):
    """SmolLM2 from `model.path`, truncated to `NUM_LAYERS` layers, then LoRA from `model.peft`."""
    from fedray.models.adapters import add_lora
    from fedray.models.hf import build_base

    model = build_base(dataclasses.replace(cfg, peft=None), info)
    model.model.layers = model.model.layers[:NUM_LAYERS]
    model.config.num_hidden_layers = NUM_LAYERS
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:NUM_LAYERS]
    return model if cfg.peft is None else add_lora(model, cfg.peft)
