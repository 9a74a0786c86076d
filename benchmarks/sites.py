"""Overhead of a federation across sites: the loopback federation against the same run in one cluster.

    PYTHONPATH=. python benchmarks/sites.py --workload mlp --rounds 5
    PYTHONPATH=. python benchmarks/sites.py --workload lora --rounds 3

Two sites (`fedray site serve`, each its own local Ray with 1 CPU) and a server in a
third Ray reach each other over mutual TLS on loopback; the single-cluster run is the
same experiment (same seed) in one Ray with 2 CPUs. Prints, per variant: the median
round time (s), the model bytes per round as the round counts them (bytes_up +
bytes_down), the bytes that crossed the wire per round (every message in the server's
audit log: framing, instructions, results and commits included), and whether the
metrics are equal bit for bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_sites import EXPERIMENT, make_federation, metrics, serving  # noqa: E402

LORA = {
    "name": "fed", "seed": 0,
    "data": {"dataset": "shakespeare", "partition": "natural", "max_owners": 4, "seq_len": 64,
             "tokenizer": "byte", "test_fraction": 0.05},
    "model": {"name": "hf_causal_lm", "dtype": "float32",
              "config": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768,
                         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                         "max_position_embeddings": 128},
              "peft": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}},
    "clients": {"num_clients": 4, "placement": "pool", "pool_size": 2, "resources": {"num_cpus": 1}},
    "train": {"local_steps": 5, "batch_size": 16, "optimizer": "adamw", "lr": 0.003},
    "server": {"rounds": 3, "clients_per_round": 4, "min_clients": 1, "eval_every": 1, "checkpoint_every": 0},
}
MLP = {**EXPERIMENT, "model": {"name": "mlp", "hidden": [64]},
       "data": {k: v for k, v in EXPERIMENT["data"].items() if k != "client_test_fraction"},
       "server": {k: v for k, v in EXPERIMENT["server"].items()
                  if k not in ("secure_aggregation", "privacy", "evaluation")}}


def summarise(run_dir: str) -> dict:
    rows = pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()
    out = {"s_per_round": statistics.median(r["round_wall_s"] for r in rows),
           "model_mb_per_round": statistics.mean(r["bytes_up"] + r["bytes_down"] for r in rows) / 1e6}
    audit = Path(run_dir, "audit.jsonl")
    if audit.exists():
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        wire = sum(r["bytes"] for r in records if r["round"] >= 1)
        out["wire_mb_per_round"] = wire / len(rows) / 1e6
    return out


def main() -> None:
    import ray

    from fedray.config import load_config
    from fedray.launcher import prepare, run

    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=["mlp", "lora"], default="mlp")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = {**(MLP if args.workload == "mlp" else LORA)}
    base["server"] = {**base["server"], "rounds": args.rounds}
    root = Path(tempfile.mkdtemp(prefix="fedray-sites-bench-"))
    federation = make_federation(root, base=base, site_cpus=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        single = run(prepare(load_config(federation["experiment"], [f"output_dir={root}/single",
                                                                     "federation.sites=[]"])), console=lambda _: None)
        with serving(federation):
            sites = run(prepare(load_config(federation["experiment"])), console=lambda _: None)
    finally:
        ray.shutdown()
    report = {"workload": args.workload, "rounds": args.rounds, "single": summarise(single["run_dir"]),
              "sites": summarise(sites["run_dir"]),
              "bit_identical": metrics(single["run_dir"]) == metrics(sites["run_dir"])}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
