"""Federated LoRA end to end on a real local Ray: a tiny llama over four Shakespeare roles."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedray.cli.main import main
from fedray.config import load_config
from fedray.launcher import prepare, run
from fedray.models.adapters import lora_layout
from fedray.models.build import build_model
from fedray.models.flat import param_spec
from fedray.models.tasks import CausalLM
from fedray.server.checkpoint import list_checkpoints, load_checkpoint
from fedray.server.export import global_model

ROUNDS, CLIENTS = 3, 4
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5


def lora_config(tmp_path, *overrides):
    """Every client trains every round, so byte counts are exact."""
    base = [
        f"output_dir={tmp_path}", "name=lora",
        "data.dataset=shakespeare", "data.partition=natural", "data.max_owners=4",
        "data.seq_len=32", "data.test_fraction=0.1",
        "model.name=hf_causal_lm", "model.config.model_type=llama", "model.config.hidden_size=64",
        "model.config.intermediate_size=128", "model.config.num_hidden_layers=2",
        "model.config.num_attention_heads=4", "model.config.num_key_value_heads=2",
        "model.config.max_position_embeddings=64",
        "model.peft.r=4", "model.peft.alpha=8", "model.peft.target_modules=[q_proj,v_proj]",
        f"clients.num_clients={CLIENTS}", "clients.placement=pool", "clients.pool_size=1",
        "clients.resources.num_cpus=1",
        "train.local_steps=5", "train.batch_size=8", "train.optimizer=adamw", "train.lr=0.01",
        f"server.rounds={ROUNDS}", f"server.clients_per_round={CLIENTS}", "server.checkpoint_every=1",
    ]
    return load_config(None, [*base, *overrides])


def run_lora(cfg, warm=None):
    prepared = prepare(cfg)
    summary = run(prepared, console=lambda line: None, warm=warm)
    assert summary["status"] == "completed"
    rows = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()
    state = load_checkpoint(list_checkpoints(Path(summary["run_dir"]) / "checkpoints")[-1])
    return prepared, summary["run_dir"], rows, state


def reloaded_export(run_dir, out):
    """`fedray export`, then the adapter loaded by PEFT onto the exported base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    base = AutoModelForCausalLM.from_pretrained(out / "base", local_files_only=True)
    return PeftModel.from_pretrained(base, out / "adapter").eval()


def assert_same_global_model(prepared, state, rows, exported):
    task = CausalLM()
    test = task.prepare(prepared.dataset.test, torch.device("cpu"))
    ours = global_model(prepared.cfg, state, prepared.dataset.info)
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=test[:8].clamp_min(0)).logits,
                                   ours(input_ids=test[:8].clamp_min(0)).logits, rtol=1e-4, atol=1e-4)
    # and the exported adapter scores the held-out split as the server did last round
    assert task.evaluate(exported, test, 256)["loss"] == pytest.approx(rows[-1]["eval_loss"], rel=1e-5)


def bytes_per_rank(prepared):
    layout = lora_layout(param_spec(build_model(prepared.cfg.model, prepared.dataset.info, 0)), prepared.cfg.model.peft)
    return 4 * layout.size_per_rank


def test_only_adapters_travel_perplexity_falls_and_the_export_reloads(ray_cluster, tmp_path, warm_actors):
    prepared, run_dir, rows, state = run_lora(lora_config(tmp_path), warm_actors)
    model = build_model(prepared.cfg.model, prepared.dataset.info, prepared.cfg.seed)
    spec = param_spec(model)
    full_bytes = 4 * sum(p.numel() for p in model.parameters())

    # the payload: LoRA A/B tensors only, a few percent of the model, every round
    assert all(".lora_A." in n or ".lora_B." in n for n in spec.names)
    assert state.params.shape == (spec.num_params,) and spec.num_bytes < 0.05 * full_bytes
    assert [r["bytes_up"] for r in rows] == [CLIENTS * spec.num_bytes] * ROUNDS
    assert [r["bytes_down"] for r in rows] == [CLIENTS * spec.num_bytes] * ROUNDS
    assert all(r["clients_succeeded"] == CLIENTS for r in rows)

    perplexity = [r["eval_perplexity"] for r in rows]
    assert perplexity[-1] < perplexity[0]
    assert perplexity == pytest.approx([np.exp(r["eval_loss"]) for r in rows])

    exported = reloaded_export(run_dir, tmp_path / "export")
    assert_same_global_model(prepared, state, rows, exported)


def test_heterogeneous_ranks_travel_at_their_rank_and_aggregate(ray_cluster, tmp_path, warm_actors):
    ranks = [1, 2, 4, 2]
    prepared, _, rows, state = run_lora(lora_config(tmp_path, f"model.peft.client_ranks={ranks}"), warm_actors)
    per_round = sum(ranks) * bytes_per_rank(prepared)
    assert [(r["bytes_up"], r["bytes_down"]) for r in rows] == [(per_round, per_round)] * ROUNDS
    assert all(r["clients_succeeded"] == CLIENTS and r["updates_rejected"] == 0 for r in rows)
    assert state.params.size * 4 == 4 * bytes_per_rank(prepared)  # the global adapter keeps rank 4
    assert rows[-1]["eval_perplexity"] < rows[0]["eval_perplexity"]


def test_stacked_aggregation_folds_exact_updates_and_exports_them(ray_cluster, tmp_path, warm_actors):
    ranks = [1, 2, 4, 2]
    cfg = lora_config(tmp_path, f"model.peft.client_ranks={ranks}", "model.peft.aggregation=stack")
    prepared, run_dir, rows, state = run_lora(cfg, warm_actors)
    unit = bytes_per_rank(prepared)
    layout = lora_layout(param_spec(build_model(cfg.model, prepared.dataset.info, 0)), cfg.model.peft)

    # one stack per round, of rank sum(ranks); the adapter clients start from never moves
    assert [layout.rank_of(m) for m in state.merges] == [sum(ranks)] * ROUNDS
    assert not any(b.any() for _, b in layout.factors(state.params))
    # down: each client's rank, plus last round's stack once for the one actor
    assert [r["bytes_up"] for r in rows] == [sum(ranks) * unit] * ROUNDS
    assert [r["bytes_down"] for r in rows] == [sum(ranks) * unit] + [2 * sum(ranks) * unit] * (ROUNDS - 1)
    assert rows[-1]["eval_perplexity"] < rows[0]["eval_perplexity"]

    exported = reloaded_export(run_dir, tmp_path / "export")
    assert exported.peft_config["default"].r == ROUNDS * sum(ranks) + cfg.model.peft.r
    assert_same_global_model(prepared, state, rows, exported)


def test_async_updates_stack_mixed_ranks(ray_cluster, tmp_path, warm_actors):
    """FedBuff over exact stacking with mixed ranks: each model update folds one stack whose
    B is discounted by the buffer's staleness (once, as a scale of B @ A)."""
    ranks = [1, 2, 4, 2]
    cfg = lora_config(tmp_path, f"model.peft.client_ranks={ranks}", "model.peft.aggregation=stack",
                      "server.mode=async", "server.buffer_size=2", "server.rounds=2")
    prepared, _, rows, state = run_lora(cfg, warm_actors)
    assert len(state.merges) == 2 and all(r["clients_succeeded"] == 2 for r in rows)
    assert np.isfinite([r["eval_perplexity"] for r in rows]).all()
