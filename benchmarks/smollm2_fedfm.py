"""Benchmark of examples/smollm2_fedfm: SmolLM2-135M under ZeRO-3 teaching 4-layer LoRA clients.

    python benchmarks/smollm2_fedfm.py [--variants none,real,synthetic] [key=value ...]

Runs the example once per variant, one after another on a local Ray, with the
same seed:
  none       no knowledge transfer (the public rows are still held out, so the
             clients train on the same data as with `real`);
  real       KD both ways on 32 held-out rows of the roles' text;
  real_renormalised  the same with `rest_mass: false` (KD renormalised over the top-k);
  synthetic  KD both ways on 32 sequences that SmolLM2 samples under ZeRO (nothing
             held out: the clients keep those rows).
From each run's metrics.parquet and clients.parquet: seconds per round (median
over rounds), tokens/s per client (its local steps' tokens over its own wall clock
for its whole fit in the last round, median over clients), bytes per round, the clients'
global model's held-out perplexity per round, the foundation model's KD loss.
Also the held-out perplexity of the clients' starting model and of SmolLM2
itself. Results go to benchmarks/results/smollm2_fedfm.json and a Markdown
table to stdout; `uptime` is recorded, since wall-clock figures depend on load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIG = REPO / "examples" / "smollm2_fedfm" / "config.yaml"
VARIANTS = {
    "none": ["server.distill.server_to_client=false", "server.distill.client_to_server=false"],
    "real": [],
    "real_renormalised": ["server.distill.rest_mass=false"],
    "synthetic": ["server.distill.public.source=generate"],
}


def one_run(name: str, overrides: list[str], output_dir: Path) -> dict:
    from fedray.config import load_config
    from fedray.launcher import prepare, run

    cfg = load_config(CONFIG, [f"output_dir={output_dir}", f"name=smollm2_fedfm-{name}", *overrides])
    summary = run(prepare(cfg), console=lambda line: print(f"  [{name}] {line}", flush=True))
    run_dir = Path(summary["run_dir"])
    rounds = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    tokens = cfg.train.local_steps * cfg.train.batch_size * cfg.data.seq_len
    clients = pq.read_table(run_dir / "clients.parquet").to_pylist()
    return {
        "status": summary["status"],
        "round_s": [round(r["round_wall_s"], 1) for r in rounds],
        "median_round_s": round(statistics.median(r["round_wall_s"] for r in rounds), 1),
        "client_tokens_per_s": round(statistics.median(tokens / c["last_wall_s"] for c in clients), 1),
        "bytes_up_per_round": rounds[-1]["bytes_up"],
        "bytes_down_per_round": rounds[-1]["bytes_down"],
        "perplexity": [round(r["eval_perplexity"], 1) for r in rounds],
        "kd_loss": [round(r["kd_loss"], 4) for r in rounds],
        "setup_s": round(summary["wall_s"] - summary.get("rounds_wall_s", 0.0), 1),
    }


def reference_perplexities() -> dict:
    """Held-out perplexity of the clients' starting model (no adapter trained) and of SmolLM2."""
    import dataclasses

    import torch

    from fedray.config import load_config
    from fedray.launcher import prepare
    from fedray.models.build import build_model
    from fedray.models.tasks import CausalLM

    cfg = load_config(CONFIG)
    data = prepare(cfg).dataset
    test = CausalLM().prepare(data.test, torch.device("cpu"))
    out = {}
    for name, spec in (("student_start", cfg.model),
                       ("smollm2_135m", dataclasses.replace(cfg.server.foundation_model.model))):
        model = build_model(spec, data.info, cfg.seed).eval()
        out[name] = round(math.exp(CausalLM().evaluate(model, test, 8)["loss"]), 1)
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="none,real,real_renormalised,synthetic")
    parser.add_argument("--output-dir", default=str(REPO / "runs" / "bench"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import ray

    results = {"uptime_before": uptime()}
    results["reference_perplexity"] = reference_perplexities()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    for name in args.variants.split(","):
        results[name] = one_run(name, VARIANTS[name] + args.overrides, Path(args.output_dir))
        results[f"uptime_after_{name}"] = uptime()
    ray.shutdown()
    out = REPO / "benchmarks" / "results" / "smollm2_fedfm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print("\n| variant | s/round | tokens/s per client | MB up/round | MB down/round | held-out ppl by round |")
    print("|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        r = results[name]
        print(f"| {name} | {r['median_round_s']} | {r['client_tokens_per_s']} "
              f"| {r['bytes_up_per_round'] / 1e6:.2f} | {r['bytes_down_per_round'] / 1e6:.2f} "
              f"| {' → '.join(map(str, r['perplexity']))} |")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
