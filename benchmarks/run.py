"""Benchmark fedray against the no-framework floor on the three workloads.

    python benchmarks/run.py [--workloads overhead scale model_size] [--repeats 3]

For each workload: N fedray runs (`python -m fedray run`, a fresh local Ray each
time, so end-to-end time includes starting Ray) and N floor runs in this
process. Reports medians: end-to-end seconds, seconds per round after the first,
and the peak memory (sum of PSS, so shared pages count once) of the whole
fedray process tree: driver, Ray's daemons and every worker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from floor import run_floor  # noqa: E402

from fedray.config import load_config  # noqa: E402

WORKLOADS = ("overhead", "scale", "model_size")


def tree_pss_bytes(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_fedray(config: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fedray", "run", str(config), f"output_dir={out}"]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = [0]
        done = threading.Event()

        def sample():
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], tree_pss_bytes(root))
                except psutil.NoSuchProcess:
                    return
                done.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = proc.communicate()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"fedray run {config} failed:\n{output}")
        run_dir = next(p for p in Path(out).iterdir() if p.is_dir())
        rounds = pq.read_table(run_dir / "metrics.parquet").to_pylist()
        summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "end_to_end_s": wall,
        "round_s": statistics.median(r["round_wall_s"] for r in rounds[1:]),
        "first_round_s": rounds[0]["round_wall_s"],
        "peak_pss_gb": peak[0] / 1e9,
        "accuracy": summary["final_metrics"].get("accuracy"),
    }


def bench(workload: str, repeats: int) -> dict:
    config = HERE / "configs" / f"{workload}.yaml"
    cfg = load_config(config)
    fedray_runs = [run_fedray(config) for _ in range(repeats)]
    floor_runs = [statistics.median(run_floor(cfg)[1:]) for _ in range(repeats)]
    med = lambda key: statistics.median(r[key] for r in fedray_runs)  # noqa: E731
    floor_round = statistics.median(floor_runs)
    return {
        "workload": workload,
        "repeats": repeats,
        "end_to_end_s": med("end_to_end_s"),
        "fedray_round_s": med("round_s"),
        "floor_round_s": floor_round,
        "ratio": med("round_s") / floor_round,
        "first_round_s": med("first_round_s"),
        "peak_pss_gb": med("peak_pss_gb"),
        "accuracy": med("accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    results = []
    print("| workload | end-to-end s | fedray s/round | floor s/round | ratio | peak memory GB |")
    print("|---|---|---|---|---|---|")
    for workload in args.workloads:
        r = bench(workload, args.repeats)
        results.append(r)
        print(f"| {workload} | {r['end_to_end_s']:.1f} | {r['fedray_round_s']:.3f} | "
              f"{r['floor_round_s']:.3f} | {r['ratio']:.2f} | {r['peak_pss_gb']:.2f} |", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"{stamp}.json").write_text(json.dumps({
        "cpu_count": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
