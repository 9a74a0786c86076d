"""Algorithms on digits: robust aggregation under attack, and non-IID convergence.

    python benchmarks/algorithms.py robustness [--seeds 0 1 2]
    python benchmarks/algorithms.py noniid [--seeds 0 1 2]

One local Ray for all runs (each run still starts its own server and client
actors). Every figure is a median over seeds of accuracy or rounds, which do not
depend on the machine's load. Results go to benchmarks/results/algorithms-*.json
and a Markdown table to stdout.

robustness: 10 clients (IID), all 10 per round, 20 rounds of 2 local epochs,
clients 0-2 attack; the update-norm check is off so that only the aggregator
defends. Honest updates have L2 norm ~0.3 here and lie ~0.1 from their mean,
which sets `norm_bound`'s max_norm (0.3) and `centered_clip`'s tau (0.1); the
Gaussian attackers send N(0, 0.1^2) per coordinate (norm ~7).
noniid: 20 clients with Dirichlet alpha = 0.1, 10 per round, 2 local epochs, up to
60 rounds; rounds until the held-out accuracy first reaches 0.85.
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

ROBUST_BASE = ["clients.num_clients=10", "server.clients_per_round=10", "clients.placement=pool",
               "clients.pool_size=2", "server.rounds=20", "train.lr=0.1", "train.local_epochs=2", "data.partition=iid",
               "server.validation.max_norm_ratio=null", "server.checkpoint_every=0"]
ATTACKS = {
    "none": [],
    "sign_flip": ["clients.attack={name: sign_flip, clients: [0, 1, 2]}"],
    "scale x100": ["clients.attack={name: scale, clients: [0, 1, 2], scale: 100.0}"],
    "gaussian": ["clients.attack={name: gaussian, clients: [0, 1, 2], std: 0.1}"],
    "label_flip": ["clients.attack={name: label_flip, clients: [0, 1, 2]}"],
}
AGGREGATORS = {
    "weighted_mean": "{name: weighted_mean}",
    "median": "{name: median}",
    "trimmed_mean": "{name: trimmed_mean, args: {beta: 0.3}}",
    "krum": "{name: krum, args: {num_malicious: 3}}",
    "multi_krum": "{name: multi_krum, args: {num_malicious: 3, num_selected: 4}}",
    "centered_clip": "{name: centered_clip, args: {tau: 0.1, iterations: 3}}",
    "norm_bound": "{name: norm_bound, args: {max_norm: 0.3}}",
}

NONIID_BASE = ["clients.num_clients=20", "server.clients_per_round=10", "clients.placement=pool",
               "clients.pool_size=2", "server.rounds=60", "train.local_epochs=2", "train.lr=0.05",
               "data.partition=dirichlet", "data.alpha=0.1", "server.checkpoint_every=0"]
STRATEGIES = {
    "FedAvg": "{name: fedavg}",
    "FedProx (mu 0.01)": "{name: fedprox, args: {mu: 0.01}}",
    "SCAFFOLD": "{name: scaffold}",
    "FedAdam (server_lr 0.01)": "{name: fedadam, args: {server_lr: 0.01}}",
    "FedYogi (server_lr 0.01)": "{name: fedyogi, args: {server_lr: 0.01}}",
}


def one_run(overrides: list[str], seed: int) -> list[dict]:
    """metrics.parquet rows of one run."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [*overrides, f"seed={seed}", f"output_dir={out}", "name=bench"])
        summary = run(prepare(cfg), console=lambda line: None)
        return pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()


def robustness(seeds: list[int]) -> dict:
    table: dict = {}
    for attack, attack_overrides in ATTACKS.items():
        for name, aggregator in AGGREGATORS.items():
            finals = [one_run([*ROBUST_BASE, *attack_overrides, f"server.aggregator={aggregator}"], s)[-1]
                      ["eval_accuracy"] for s in seeds]
            table.setdefault(name, {})[attack] = statistics.median(finals)
            print(f"  {attack:>11} {name:>14}: {finals}", flush=True)
    print("\n| aggregator | " + " | ".join(ATTACKS) + " |")
    print("|---|" + "---|" * len(ATTACKS))
    for name, row in table.items():
        print(f"| `{name}` | " + " | ".join(f"{row[a]:.3f}" for a in ATTACKS) + " |")
    return table


def noniid(seeds: list[int], target: float = 0.85) -> dict:
    table: dict = {}
    for name, strategy in STRATEGIES.items():
        reached, finals = [], []
        for s in seeds:
            rows = one_run([*NONIID_BASE, f"server.strategy={strategy}"], s)
            hits = [r["round"] for r in rows if r["eval_accuracy"] >= target]
            reached.append(hits[0] if hits else float("inf"))
            finals.append(rows[-1]["eval_accuracy"])
        table[name] = {"rounds_to_target": statistics.median(reached), "rounds": reached,
                       "final_accuracy": statistics.median(finals)}
        print(f"  {name}: rounds {reached}, final {finals}", flush=True)
    print(f"\n| strategy | rounds to {target} (median; per seed) | final accuracy after 60 rounds |")
    print("|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['rounds_to_target']} ({', '.join(str(r) for r in row['rounds'])}) "
              f"| {row['final_accuracy']:.3f} |")
    return table


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["robustness", "noniid"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        table = (robustness if args.experiment == "robustness" else noniid)(args.seeds)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"algorithms-{args.experiment}-{stamp}.json").write_text(json.dumps(
            {"seeds": args.seeds, "wall_s": time.perf_counter() - started, "table": table}, indent=2))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
