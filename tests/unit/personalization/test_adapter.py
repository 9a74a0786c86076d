"""The personal LoRA adapter: beside the shared one, active, trained, never in the layout that travels."""

import numpy as np
import torch

from fedray.config import load_config
from fedray.models.adapters import RankedAdapters, lora_layout
from fedray.models.build import build_model
from fedray.models.flat import param_spec, travelling
from fedray.personalization import local_names, personalize, shared_spec
from fedray.personalization.adapter import PERSONAL
from tests.unit.models.test_hf import INFO, LLAMA, logits, tiny

def lora_run(*overrides):
    return load_config(None, ["model.name=hf_causal_lm", "model.peft={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}",
                              "clients.personalization={name: personal_adapter}", *overrides])


def personal_model(cfg):
    model = build_model(tiny(), INFO, seed=0)
    personalize(cfg, model)
    return model


def test_personal_adapter_is_local_active_and_seeded_alike():
    cfg = lora_run()
    model, again = personal_model(cfg), personal_model(cfg)
    local = local_names(cfg, model)
    assert local and all(f".lora_A.{PERSONAL}." in n or f".lora_B.{PERSONAL}." in n for n in local)
    spec = shared_spec(cfg, model)
    assert set(spec.names) == {n for n in travelling(model) if ".default." in n}
    assert lora_layout(spec, cfg.model.peft).rank == 4
    for name in local:  # every process builds the same initial personal adapter
        torch.testing.assert_close(travelling(model)[name], travelling(again)[name], rtol=0, atol=0)
    before = logits(model)  # B starts at zero: a no-op until it trains ...
    with torch.no_grad():
        for name in local:
            if ".lora_B." in name:
                travelling(model)[name].add_(0.1)
    assert not torch.allclose(logits(model), before)  # ... and it is in the forward pass


def test_activating_a_rank_keeps_the_personal_adapter_training_and_out_of_the_layout():
    cfg = lora_run()
    model = personal_model(cfg)
    adapters = RankedAdapters(model, cfg.model.peft, [4], keep=(PERSONAL,))
    spec = adapters.activate(4)
    assert spec.names == shared_spec(cfg, model).names
    assert all(p.requires_grad for n, p in model.named_parameters() if f".{PERSONAL}." in n)
    assert param_spec(model).num_params == 2 * spec.num_params
