"""Federated evaluation: what it costs per round, and the per-client spread it reveals (issue 25).

1. Cost: configs/quickstart.yaml (10 clients, 5 rounds here) with every client holding
   out 20 % of its rows, run with `server.evaluation.where: server` and `both`; prints
   the median seconds per round the clients' evaluation took (`fed_eval_s`, wall
   clock, all ten clients) beside the median round time.
2. Spread: digits, Dirichlet alpha = 0.1, 20 clients (10 per round), no server split
   (`where: clients`, all 20 evaluate), seeds 0-2; prints each round's example-weighted
   mean client accuracy, the worst-10 % and best-10 % means and the share below 0.5.

`python benchmarks/federated_eval.py [OUT_DIR]` (one local Ray, two CPUs).
"""

from __future__ import annotations

import statistics
import sys
import tempfile

import pyarrow.parquet as pq

from fedray.config import load_config
from fedray.launcher import prepare, run

HOLD_OUT = ["data.client_test_fraction=0.2", "clients.resources.num_cpus=0.1"]


def metrics(overrides: list[str], out: str, name: str) -> list[dict]:
    cfg = load_config("configs/quickstart.yaml", [f"output_dir={out}", f"name={name}", *HOLD_OUT, *overrides])
    summary = run(prepare(cfg), console=lambda line: None)
    return pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()


def cost(out: str) -> None:
    for where in ("server", "both"):
        rows = metrics(["server.rounds=5", f"server.evaluation.where={where}"], out, f"cost-{where}")
        line = f"where={where}: median round {statistics.median(r['round_wall_s'] for r in rows):.3f} s"
        if where == "both":
            line += f"; clients' evaluation {statistics.median(r['fed_eval_s'] for r in rows):.3f} s per round"
            line += f" (simulated {statistics.median(r['fed_sim_s'] for r in rows):.2f} s)"
        print(line, flush=True)


def spread(out: str) -> None:
    for seed in (0, 1, 2):  # pool placement: the same numbers as an actor per client, faster start-up
        rows = metrics([f"seed={seed}", "server.rounds=5", "clients.num_clients=20", "data.alpha=0.1",
                        "data.test_fraction=0", "server.evaluation.where=clients", "clients.placement=pool",
                        "clients.pool_size=2"], out, f"spread-{seed}")
        for r in rows:
            print(f"seed {seed} round {r['round']}: mean {r['fed_global_accuracy']:.4f} | worst 10% "
                  f"{r['fed_global_accuracy_worst10']:.4f} | best 10% {r['fed_global_accuracy_best10']:.4f} | "
                  f"std {r['fed_global_accuracy_std']:.4f} | below 0.5 {r['fed_global_accuracy_below']:.2f}",
                  flush=True)


def main() -> None:
    import ray

    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cost(out)
        spread(out)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
