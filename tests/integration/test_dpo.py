"""Federated DPO on a real local Ray: a tiny llama on a 4-bit base, arithmetic preference
pairs at two sites, clients' memory reserved from a probe fit (`memory_gb: auto`), and a
run stopped after round 1 that resumes to the same result."""

import json
import math
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedray.config import load_config
from fedray.launcher import prepare, run
from tests.helpers import assert_resumes_exactly

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def write_pairs(folder: Path, sites: int = 2, per_site: int = 24, seed: int = 0) -> Path:
    """`a+b=` prompts; chosen: the sum, rejected: the sum off by one to nine."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for site in range(sites):
        rows = []
        for _ in range(per_site):
            a, b = rng.randrange(10, 50), rng.randrange(10, 50)
            rows.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + rng.randrange(1, 10))})
        (folder / f"site{site}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def dpo_config(tmp_path, *overrides):
    pairs = tmp_path / "pairs"
    return load_config(None, [
        f"output_dir={tmp_path}", "name=dpo",
        "data.dataset=preferences", f"data.path={pairs if pairs.exists() else write_pairs(pairs)}",
        "data.partition=natural",
        "data.seq_len=40", "data.test_fraction=0.25",
        "model.name=hf_causal_lm", "model.config.model_type=llama", "model.config.hidden_size=32",
        "model.config.intermediate_size=64", "model.config.num_hidden_layers=1",
        "model.config.num_attention_heads=4", "model.config.num_key_value_heads=2",
        "model.config.max_position_embeddings=48",
        "model.peft.r=4", "model.peft.alpha=8", "model.peft.target_modules=[q_proj,v_proj]",
        "clients.num_clients=2", "clients.placement=pool", "clients.pool_size=1",
        "clients.resources.num_cpus=1",
        "train.objective=dpo", "train.beta=0.5", "train.local_steps=4", "train.batch_size=8",
        "train.optimizer=adamw", "train.lr=0.01",
        "server.rounds=2", "server.clients_per_round=2", *overrides,
    ])


QUANTISED = ("model.quantization.bits=4", "model.quantization.type=nf4", "server.checkpoint_every=1")


def test_dpo_on_a_4bit_base_trains_reports_preferences_and_resumes_exactly(ray_cluster, tmp_path):
    cfg = dpo_config(tmp_path, *QUANTISED, "clients.resources.memory_gb=auto")
    lines = []
    summary = run(prepare(cfg), console=lines.append)
    assert summary["status"] == "completed"
    # the probe fit sized the clients' reservation before they started
    [probe] = [line for line in lines if line.startswith("memory: a probe fit peaked at")]
    assert "each client actor reserves" in probe
    rows = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()
    # policy == reference at the start: DPO's loss is log 2; training lowers it
    assert rows[-1]["train_loss"] < math.log(2)
    for row in rows:
        assert 0 <= row["eval_accuracy"] <= 1 and 0 <= row["reward_accuracy"] <= 1
        assert math.isfinite(row["reward_margin"]) and math.isfinite(row["eval_loss"])
    clients = pq.read_table(Path(summary["run_dir"]) / "clients.parquet").to_pydict()
    assert all(p > 0 for p in clients["peak_memory_mb"])

    # Ctrl-C after round 1, then --resume: the same metrics and adapters, byte for byte
    # (the reservation is a resumable key: the stopped run reserves nothing)
    assert_resumes_exactly(lambda folder: dpo_config(folder, *QUANTISED), tmp_path / "again", reference=summary)
