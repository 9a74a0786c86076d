"""Local DP-SGD through Opacus: per-example clipping and noise on the trainable
parameters only (LoRA adapters too), seeded, with an epsilon that adds up."""

import numpy as np
import pytest
import torch

from fedray.client.train import train_local
from fedray.config.schema import DPSGDConfig, ModelConfig, PeftConfig, TrainConfig
from fedray.models.tasks import CausalLM, Classification
from fedray.privacy.dpsgd import Account, account, epsilon_of


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


DATA = (torch.randn(64, 8, generator=torch.Generator().manual_seed(1)),
        torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2)))


def trained(cfg, seed=5):
    model = mlp()
    result = train_local(model, Classification(), DATA, cfg, seed=seed)
    return result, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_dp_sgd_is_seeded_and_noise_changes_the_result():
    cfg = TrainConfig(batch_size=16, lr=0.1, local_epochs=2, dp=DPSGDConfig(noise_multiplier=1.0))
    first, a = trained(cfg)
    _, b = trained(cfg)
    _, c = trained(cfg, seed=6)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert first.steps == 8 and first.sample_rate == 0.25  # 2 epochs of 64 / 16 Poisson steps


def test_per_example_clipping_bounds_each_step_without_noise():
    """No noise, clip C, lr 1 and SGD: one step moves the weights by at most C (the mean of
    per-example gradients each of norm <= C, over the expected batch)."""
    model = mlp()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = TrainConfig(batch_size=16, lr=1.0, local_steps=1, dp=DPSGDConfig(noise_multiplier=0.0, max_grad_norm=0.01))
    train_local(model, Classification(), DATA, cfg, seed=3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = float((after - before).norm())
    assert 0 < moved <= 0.01 * 64 / 16 * 1.0001  # batch may exceed its expectation


def test_only_lora_adapters_are_privatised_and_trained():
    from fedray.data.text import text_info
    from fedray.models.build import build_model

    info = text_info(seq_len=16, vocab_size=258)
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}
    model = build_model(ModelConfig(name="hf_causal_lm", config=config,
                                    peft=PeftConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"])), info, 0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    data = torch.randint(0, 258, (24, 16), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(batch_size=8, lr=0.05, local_steps=2, optimizer="adamw",
                      dp=DPSGDConfig(noise_multiplier=0.5, max_grad_norm=1.0))
    result = train_local(model, CausalLM(), data, cfg, seed=1)
    assert result.steps == 2 and np.isfinite(result.loss)
    named = dict(model.named_parameters())
    assert all(torch.equal(named[n], v) for n, v in frozen.items())
    assert any(not torch.equal(named[n], v) for n, v in adapters.items())
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())


def test_the_account_adds_up_rounds_as_opacus_would():
    from opacus.accountants import RDPAccountant

    cfg = DPSGDConfig(noise_multiplier=1.1, delta=1e-5)
    state = None
    for _ in range(3):
        state = account(state, cfg, 0.25, 8)
    assert state.history == ((1.1, 0.25, 24),)
    reference = RDPAccountant()
    reference.history = [(1.1, 0.25, 24)]
    assert state.epsilon == pytest.approx(reference.get_epsilon(1e-5))
    assert epsilon_of(((0.0, 0.25, 3),), 1e-5) == float("inf")
    assert Account().epsilon == 0.0


def test_an_empty_poisson_sample_still_takes_a_noisy_step():
    """4 examples, expected batch 1: many steps sample no example; they add noise only
    (skipping them would reveal the empty sample)."""
    tiny = (DATA[0][:4], DATA[1][:4])
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(batch_size=1, lr=0.1, local_steps=12, dp=DPSGDConfig(noise_multiplier=1.0))
    result = train_local(model, Classification(), tiny, cfg, seed=0)
    assert result.steps == 12 and np.isfinite(result.loss)
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
