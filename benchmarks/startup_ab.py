"""Start-up of two revisions, runs interleaved (A, B, A, B, ...) so that a shared machine's
load falls on both alike: end-to-end wall time, phases and peak PSS per workload.

    python benchmarks/startup_ab.py --before 224f3e9 --workloads overhead scale --repeats 3
    git worktree add ../fedray-before 5c3fa05
    python benchmarks/startup_ab.py --before 5c3fa05 --before-tree ../fedray-before   # a worktree

Each run is `python -m fedray run CONFIG` in a fresh process (a fresh local Ray), timed
and sampled as `benchmarks/run.py` does; medians of the repeats. The "after" side is
this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import CONFIGS, REPO, checkout, phases, timed_process  # noqa: E402


def one_run(workload: str, side: tuple[dict, Path], out: Path, tries: int = 8) -> dict:
    """One timed run from the side's folder (its `fedray` first on the path, also for Ray's
    workers); a run whose local Ray did not come up in Ray's 30 s (an overloaded machine)
    is tried again."""
    env, cwd = side
    cmd = [sys.executable, "-m", "fedray", "run", str(CONFIGS[workload]), f"output_dir={out}"]
    for _ in range(tries):
        lines, wall, peak, status = timed_process(cmd, env, cwd)
        if status == 0:
            return {"end_to_end_s": wall, "peak_pss_gb": peak / 1e9, **phases(lines, wall), **round_times(out)}
        if not any("timed out during startup" in line for _, line in lines):
            break
        time.sleep(10)
    raise RuntimeError(f"{' '.join(cmd)} failed ({status}):\n" + "\n".join(line for _, line in lines[-30:]))


def round_times(out: Path) -> dict:
    """The median round wall time after the first (as `run.py` reports it) from the run's
    metrics.parquet (`out` holds that one run)."""
    import pyarrow.parquet as pq

    (run_dir,) = [p for p in out.iterdir() if (p / "metrics.parquet").exists()]
    rounds = pq.read_table(run_dir / "metrics.parquet").column("round_wall_s").to_pylist()
    return {"round_s": statistics.median(rounds[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the 'before' side")
    parser.add_argument("--workloads", nargs="+", choices=[w for w in CONFIGS if not w.startswith("sweep")],
                        default=["overhead", "scale"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before-tree", type=Path,
                        help="a checkout of --before (e.g. a git worktree) to run it from, instead of an extract")
    parser.add_argument("--after-tree", type=Path, default=REPO,
                        help="the checkout of the 'after' side (default: this one)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    base = dict(os.environ)
    before = args.before_tree.resolve() if args.before_tree else checkout(args.before)
    sides = {"before": ({**base, "PYTHONPATH": str(before)}, before), "after": ({**base, "PYTHONPATH": str(args.after_tree.resolve())}, args.after_tree.resolve())}
    runs: dict = {w: {s: [] for s in sides} for w in args.workloads}
    load = os.getloadavg()
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"fedray-ab-{os.getpid()}"
    for repeat in range(args.repeats):
        for workload in args.workloads:
            for side, where in sides.items():
                runs[workload][side].append(one_run(workload, where, out / f"{side}-{repeat}-{workload}"))
                last = runs[workload][side][-1]
                print(f"{workload} {side} #{repeat + 1}: {last['end_to_end_s']:.1f} s, {last['round_s']:.3f} s/round, "
                      f"peak {last['peak_pss_gb']:.2f} GB, load {os.getloadavg()[0]:.1f}", flush=True)
    medians = {w: {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in by.items()}
               for w, by in runs.items()}
    print("| workload | side | end-to-end s | prepare s | start s | s/round | peak PSS GB |\n|---|---|---|---|---|---|---|")
    for workload, by in medians.items():
        for side, m in by.items():
            print(f"| {workload} | {side} | {m['end_to_end_s']:.1f} | {m.get('prepare_s', float('nan')):.1f} | "
                  f"{m.get('start_s', float('nan')):.1f} | {m['round_s']:.3f} | {m['peak_pss_gb']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"startup-ab-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"before": args.before, "cpu_count": os.cpu_count(),
                                "uptime": f"{load[0]:.1f} -> {os.getloadavg()[0]:.1f}",
                                "runs": runs, "medians": medians}, indent=2))
    print(f"results in {path}")


if __name__ == "__main__":
    main()
