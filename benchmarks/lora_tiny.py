"""Benchmark of configs/lora_tiny.yaml: tokens/s per client, seconds per round, bytes per round.

    python benchmarks/lora_tiny.py [key=value ...]

1. Runs the config end to end on a local Ray (overrides apply) and reads its
   metrics.parquet: seconds per round, bytes up and down per round, and what
   sending the full model would cost instead.
2. Times one client's local training on its own, in this process, with the
   run's settings and one thread (as a client actor gets with num_cpus: 1):
   tokens/s per client, over the first few clients.
Results go to benchmarks/results/lora_tiny.json and a Markdown table to stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fedray.client.actor import ClientActor
from fedray.config import load_config
from fedray.launcher import prepare, run
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec
from fedray.types import FitInstructions

REPO = Path(__file__).resolve().parent.parent
CLIENTS_TIMED = 4


def client_tokens_per_s(prepared) -> list[float]:
    cfg, data = prepared.cfg, prepared.dataset
    model = build_model(cfg.model, data.info, cfg.seed)
    params = get_flat(model, param_spec(model))
    actor = ClientActor(cfg, data.info, range(CLIENTS_TIMED))
    actor.load({c: data.shard(c) for c in range(CLIENTS_TIMED)})
    rates = []
    for cid in range(CLIENTS_TIMED):
        actor.fit(FitInstructions(1, cid, cid), (), params)  # first call: tensors built, caches warm
        started = time.perf_counter()
        result = actor.fit(FitInstructions(2, cid, cid), (), params)
        seconds = time.perf_counter() - started
        assert result.ok, result.error
        rows = int(result.metrics["steps"]) * cfg.train.batch_size * cfg.train.grad_accum_steps
        rates.append(rows * cfg.data.seq_len / seconds)
    return rates


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(REPO / "configs" / "lora_tiny.yaml", [f"output_dir={tmp}", *overrides])
        prepared = prepare(cfg)
        summary = run(prepared)
        rows = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()
    model = build_model(cfg.model, prepared.dataset.info, cfg.seed)
    full_bytes = 4 * sum(p.numel() for p in model.parameters())
    adapter_bytes = param_spec(model).num_bytes
    k = cfg.server.clients_per_round
    rates = client_tokens_per_s(prepared)
    result = {
        "overrides": overrides,
        "rounds": len(rows),
        "startup_s": summary["wall_s"] - summary["rounds_wall_s"],
        "round_s_median": statistics.median(r["round_wall_s"] for r in rows),
        "round_s_mean": float(np.mean([r["round_wall_s"] for r in rows])),
        "tokens_per_s_per_client": rates,
        "bytes_up_per_round": rows[-1]["bytes_up"],
        "bytes_down_per_round": rows[-1]["bytes_down"],
        "full_model_bytes_per_round": k * full_bytes,
        "adapter_bytes": adapter_bytes,
        "full_model_bytes": full_bytes,
        "perplexity": [r["eval_perplexity"] for r in rows],
    }
    out = REPO / "benchmarks" / "results" / "lora_tiny.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    mib = 2**20
    print(f"| tokens/s per client (1 thread) | {statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f}) |")
    print(f"| seconds per round (median, {len(rows)} rounds) | {result['round_s_median']:.1f} |")
    print(f"| bytes up per round ({k} clients) | {result['bytes_up_per_round'] / mib:.2f} MiB |")
    print(f"| bytes down per round | {result['bytes_down_per_round'] / mib:.2f} MiB |")
    print(f"| full model instead, each way | {result['full_model_bytes_per_round'] / mib:.2f} MiB "
          f"({adapter_bytes / full_bytes:.1%} of it travels) |")
    print(f"| held-out perplexity, round 1 -> {len(rows)} | {rows[0]['eval_perplexity']:.1f} -> {rows[-1]['eval_perplexity']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
