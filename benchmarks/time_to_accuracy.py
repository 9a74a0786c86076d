"""Time-to-accuracy of the client selectors on the bundled heterogeneity traces.

    python benchmarks/time_to_accuracy.py [--variants random oort deadline pareto]
                                          [--seeds 0 1 2] [--target 0.85]

Every variant runs configs/hetero_random.yaml (100 simulated FLASH phones,
label-skewed digits, 10 clients a round) with its selector, once per seed (the
seed changes the data split, the phones each client gets and every draw), in
one local Ray. Reported per variant: the median over seeds of the simulated
seconds to reach the target accuracy, the speed-up over `random`, and the
median rounds and final accuracy. Simulated time is computed, so the figures
are the same on any machine; wall time is shown only for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fedray.cli.compare import time_to_accuracy  # noqa: E402
from fedray.config import load_config  # noqa: E402
from fedray.launcher import prepare, run  # noqa: E402

CONFIG = REPO / "configs" / "hetero_random.yaml"
VARIANTS = {
    "random": ["server.selection.name=random"],
    "oort": ["server.selection.name=oort"],
    "deadline": ["server.selection.name=deadline"],
    "pareto": ["server.selection.name=pareto"],
    "power_of_choice": ["server.selection.name=power_of_choice"],
    "async": ["server.mode=async", "server.buffer_size=5", "server.rounds=160"],
}


def run_one(variant: str, seed: int, target: float, out: Path) -> dict:
    cfg = load_config(CONFIG, [f"output_dir={out}", f"name={variant}-{seed}", f"seed={seed}",
                               *VARIANTS[variant]])
    started = time.perf_counter()
    summary = run(prepare(cfg), console=lambda line: None)
    rows = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()
    reached, sim_s, _ = time_to_accuracy(rows, target)
    return {"variant": variant, "seed": seed, "round": reached, "sim_s": sim_s,
            "final_accuracy": rows[-1]["eval_accuracy"], "sim_total_s": rows[-1]["sim_time_s"],
            "wall_s": time.perf_counter() - started}


def median_or_nan(values: list) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            for seed in args.seeds:
                r = run_one(variant, seed, args.target, Path(tmp))
                runs.append(r)
                print(f"{variant} seed {seed}: {r['sim_s']:.1f} sim s (round {r['round']}), "
                      f"final accuracy {r['final_accuracy']:.3f}, {r['wall_s']:.0f} s wall", flush=True)
    ray.shutdown()

    table = {}
    for variant in args.variants:
        mine = [r for r in runs if r["variant"] == variant]
        table[variant] = {
            "sim_s": median_or_nan([r["sim_s"] for r in mine]),
            "round": median_or_nan([r["round"] for r in mine]),
            "final_accuracy": median_or_nan([r["final_accuracy"] for r in mine]),
            "reached": sum(r["round"] is not None for r in mine),
        }
    base = table.get("random", {}).get("sim_s", float("nan"))
    print(f"\n| selector | sim s to {args.target:g} (median of {len(args.seeds)}) | speed-up vs random "
          f"| rounds to target | final accuracy | seeds reaching it |")
    print("|---|---|---|---|---|---|")
    for variant, t in table.items():
        print(f"| {variant} | {t['sim_s']:.1f} | {base / t['sim_s']:.2f}x | {t['round']:.0f} | "
              f"{t['final_accuracy']:.3f} | {t['reached']}/{len(args.seeds)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"time_to_accuracy-{stamp}.json").write_text(json.dumps(
        {"target": args.target, "seeds": args.seeds, "cpu_count": os.cpu_count(),
         "runs": runs, "table": table}, indent=2))


if __name__ == "__main__":
    main()
