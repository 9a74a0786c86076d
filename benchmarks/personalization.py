"""Personalisation on digits: what federation buys, and what a personal part adds.

    python benchmarks/personalization.py [--seeds 0 1 2] [--rounds 15]
    python benchmarks/personalization.py --lora --seeds 0

20 clients with Dirichlet alpha = 0.1 label skew, 10 per round, 1 local epoch of
SGD (lr 0.05, momentum 0.5), an MLP with one hidden layer of 64; each client holds
out 20 % of its rows (`data.client_test_fraction`) and every client evaluates after
the last round (`server.evaluation.where: clients`). Methods: local (no
federation), FedAvg, FedAvg + finetune (10 steps), FedPer and FedRep (head `2.*`
personal), Ditto (lambda 0.1). FedBN is left out: this MLP has no norm layers.

For each run: the example-weighted mean and the worst-10 % mean of the clients'
held-out accuracy, for the global model and for each client's own (personal)
model. One local Ray and warm actors for all runs; accuracies do not depend on the
machine's load. Results go to benchmarks/results/personalization.json and a
Markdown table to stdout (medians over seeds).
benchmarks/results/personalization-r<rounds>.json holds every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fedray.config import load_config  # noqa: E402
from fedray.launcher import prepare, run  # noqa: E402

BASE = ["clients.num_clients=20", "server.clients_per_round=10", "clients.placement=pool", "clients.pool_size=2",
        "clients.resources.num_cpus=1", "train.local_epochs=1", "train.lr=0.05", "train.momentum=0.5",
        "train.batch_size=16", "model.hidden=[64]", "data.partition=dirichlet", "data.alpha=0.1",
        "data.client_test_fraction=0.2", "server.evaluation={where: clients, every: 1000}",
        "server.checkpoint_every=0", "server.min_clients=5"]
METHODS = {
    "local": ["server.strategy.name=local"],
    "FedAvg": [],
    "FedAvg + finetune": ["clients.personalization={name: finetune, args: {steps: 10}}"],
    "FedPer": ["clients.personalization={name: fedper, args: {patterns: ['2']}}"],
    "FedRep": ["clients.personalization={name: fedrep, args: {patterns: ['2'], head_epochs: 1}}"],
    "Ditto": ["clients.personalization={name: ditto, args: {lam: 0.1}}"],
}
COLUMNS = ["fed_global_accuracy", "fed_global_accuracy_worst10", "fed_personal_accuracy",
           "fed_personal_accuracy_worst10"]


def one_run(overrides: list[str], seed: int, warm) -> dict:
    """The last round's federated-evaluation columns of one run."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [*BASE, *overrides, f"seed={seed}", f"output_dir={out}", "name=bench"])
        summary = run(prepare(cfg), console=lambda line: None, warm=warm)
        last = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()[-1]
        return {c: last.get(c) for c in COLUMNS}


LORA = ["server.rounds=5", "server.clients_per_round=8", "train.local_steps=10", "data.client_test_fraction=0.2",
        "server.evaluation={where: clients, every: 1000}", "server.checkpoint_every=0", "ray.num_cpus=2"]
"""configs/lora_tiny.yaml, shortened for a loaded 2-core machine: 5 rounds of 8 of the 16
roles, 10 local steps; every role evaluates after the last round on its held-out 20 %."""


def lora(seed: int) -> dict:
    """Per-role held-out perplexity of the shared adapter alone and with a personal adapter:
    {variant: {model: (weighted mean, worst-10 % mean)}} (worst: the highest perplexities)."""
    import numpy as np
    import pyarrow.parquet as pq

    out = {}
    for variant, extra in (("shared", []), ("shared + personal", ["clients.personalization={name: personal_adapter}"])):
        with tempfile.TemporaryDirectory() as folder:
            cfg = load_config(str(HERE.parent / "configs" / "lora_tiny.yaml"),
                              [*LORA, *extra, f"seed={seed}", f"output_dir={folder}", "name=bench"])
            summary = run(prepare(cfg), console=lambda line: None)
            rows = pq.read_table(Path(summary["run_dir"]) / "evaluation.parquet").to_pylist()
        last = max(r["round"] for r in rows)
        out[variant] = {}
        for model in sorted({r["model"] for r in rows}):
            mine = [r for r in rows if r["round"] == last and r["model"] == model]
            ppl = np.array([r["perplexity"] for r in mine])
            weights = np.array([r["examples"] for r in mine], dtype=float)
            tail = max(1, int(np.ceil(0.1 * len(ppl))))
            out[variant][model] = (float((ppl * weights).sum() / weights.sum()), float(np.sort(ppl)[-tail:].mean()),
                                   len(ppl))
        print(variant, out[variant], flush=True)
    return out


def main() -> None:
    import ray

    from fedray.client.pool import WarmActors
    from fedray.session import PRELOAD

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--lora", action="store_true", help="the Shakespeare-roles LoRA comparison instead")
    args = parser.parse_args()
    if args.lora:
        results = {seed: lora(seed) for seed in args.seeds}
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "personalization-lora.json").write_text(json.dumps(results, indent=1))
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"preload_python_modules": list(PRELOAD)})
    warm, results, began = WarmActors(), {}, time.time()
    try:
        for name, overrides in METHODS.items():
            runs = [one_run([*overrides, f"server.rounds={args.rounds}"], s, warm) for s in args.seeds]
            results[name] = runs
            print(name, runs, flush=True)
    finally:
        warm.release()
        ray.shutdown()
    out = HERE / "results" / f"personalization-r{args.rounds}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"seeds": args.seeds, "rounds": args.rounds, "results": results,
                               "wall_s": time.time() - began}, indent=1))
    print(table(results))


def table(results: dict) -> str:
    """Medians over seeds; `own` is the model a client would use (its personal one where
    the method has one, the global one under FedAvg)."""
    def median(runs, column):
        values = [r[column] for r in runs if r[column] is not None and r[column] == r[column]]
        return f"{statistics.median(values):.3f}" if values else "-"

    lines = ["| method | global mean | global worst 10 % | own mean | own worst 10 % |",
             "|---|---|---|---|---|"]
    for name, runs in results.items():
        own = "fed_personal_accuracy" if median(runs, "fed_personal_accuracy") != "-" else "fed_global_accuracy"
        lines.append(f"| {name} | {median(runs, 'fed_global_accuracy')} | "
                     f"{median(runs, 'fed_global_accuracy_worst10')} | {median(runs, own)} | "
                     f"{median(runs, own + '_worst10')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
