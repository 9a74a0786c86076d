"""Benchmark fedray end to end against the floors, phase by phase, before and after a change.

    python benchmarks/run.py                                   # every workload, this checkout
    python benchmarks/run.py --workloads overhead quickstart --repeats 5
    python benchmarks/run.py --rev 4f50410 --label before      # the same, on an older revision
    python benchmarks/run.py --table results/before.json results/after.json

Each workload runs `python -m fedray run CONFIG` as a subprocess N times (a fresh
local Ray each time, so end to end includes starting Ray, the actors, and tearing
down) while sampling the peak PSS of the whole process tree (driver, Ray's daemons,
every worker: shared pages counted once). The time of each line the run prints
splits its wall time into phases the same way for any revision:

    prepare   process start -> `fedray: run ...` (imports, config, data)
    start     -> the `N client actor(s) ...` line (Ray and the actors ready)
    rounds    -> the last `round` line
    finish    -> `fedray: completed ...` (summary, actors stopped)
    teardown  -> the process has exited (Ray shut down)

`sweep` runs `fedray sweep` on a 6-point grid of the overhead workload (reusing warm
client actors between points; `sweep_fresh` with `--no-reuse`). The floors,
timed in the same invocation (`floor.py`): the Ray floor (a fresh interpreter that
imports ray, starts a local instance, creates one 1-CPU actor that imports torch and
shuts Ray down) for end-to-end and fixed cost, and the no-framework loop for
seconds per round. Medians of the N runs; `uptime` is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from floor import ray_floor, run_floor  # noqa: E402

CONFIGS = {
    "overhead": HERE / "configs" / "overhead.yaml",
    "scale": HERE / "configs" / "scale.yaml",
    "model_size": HERE / "configs" / "model_size.yaml",
    "scale_100k": HERE / "configs" / "scale_100k.yaml",
    "scale_100k_ef": HERE / "configs" / "scale_100k_ef.yaml",
    "quickstart": REPO / "configs" / "quickstart.yaml",
    "sweep": HERE / "configs" / "sweep.yaml",
    "sweep_fresh": HERE / "configs" / "sweep.yaml",
}
SWEEP_GRID = ["--grid", "train.lr=0.05,0.1,0.2", "--grid", "data.alpha=0.5,1.0"]
"""The 6-point grid of the `sweep` workload."""
WORKLOADS = tuple(CONFIGS)
_ROUND = re.compile(r"^round +(\d+)/(\d+) ")


def tree_pss_bytes(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def timed_process(cmd: list[str], env: dict, cwd: Path = REPO) -> tuple[list[tuple[float, str]], float, int, int]:
    """Run `cmd` in `cwd`; (its output lines with the seconds at which each arrived, the wall
    seconds until it exited, its peak tree PSS in bytes, its exit status). `python -m`
    puts `cwd` first on the path (before PYTHONPATH): another revision runs from its own."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    peak, done = [0], threading.Event()

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
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in proc.stdout]
    proc.wait()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    return lines, wall, peak[0], proc.returncode


def phases(lines: list[tuple[float, str]], wall: float) -> dict:
    """Phase durations from the times of a run's console lines (see the module docstring)."""
    def first(pred):
        return next((t for t, line in lines if pred(line)), None)

    run_line = first(lambda line: line.startswith("fedray: run "))
    ready = first(lambda line: "client actor(s) for" in line)
    rounds = [t for t, line in lines if _ROUND.match(line)]
    done = first(lambda line: line.startswith("fedray: completed"))
    if None in (run_line, ready, done) or not rounds:
        return {}
    return {"prepare_s": run_line, "start_s": ready - run_line, "rounds_s": rounds[-1] - ready,
            "finish_s": done - rounds[-1], "teardown_s": wall - done}


def run_fedray(workload: str, python: str, env: dict) -> dict:
    """One run of a workload; its phases, per-round seconds and peak memory."""
    import pyarrow.parquet as pq

    config = CONFIGS[workload]
    with tempfile.TemporaryDirectory() as out:
        if workload.startswith("sweep"):
            cmd = [python, "-m", "fedray", "sweep", str(config), f"output_dir={out}", *SWEEP_GRID]
            cmd += ["--no-reuse"] if workload == "sweep_fresh" else []
        else:
            cmd = [python, "-m", "fedray", "run", str(config), f"output_dir={out}"]
        lines, wall, peak, status = timed_process(cmd, env)
        if status != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({status}):\n" + "\n".join(line for _, line in lines[-30:]))
        result = {"end_to_end_s": wall, "peak_pss_gb": peak / 1e9}
        startup = next((line for _, line in lines if "start-up" in line), "")
        result["startup_line"] = startup.split("; ")[-1] if startup else ""
        if workload.startswith("sweep"):
            return result
        run_dir = next(p for p in Path(out).iterdir() if p.is_dir())
        rounds = pq.read_table(run_dir / "metrics.parquet").to_pylist()
        summary = json.loads((run_dir / "summary.json").read_text())
    result.update(phases(lines, wall))
    result.update(
        round_s=statistics.median(r["round_wall_s"] for r in rounds[1:]),
        first_round_s=rounds[0]["round_wall_s"],
        rounds_total_s=sum(r["round_wall_s"] for r in rounds),
        accuracy=summary["final_metrics"].get("accuracy"),
    )
    result["fixed_s"] = wall - result["rounds_total_s"]
    return result


def median_of(runs: list[dict]) -> dict:
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float)) and v is not None}
    out = {k: statistics.median(r[k] for r in runs if r.get(k) is not None) for k in sorted(keys)}
    out["startup_line"] = runs[len(runs) // 2].get("startup_line", "")
    return out


def bench(workload: str, repeats: int, python: str, env: dict) -> dict:
    """Medians of `repeats` runs of a workload, with the floors timed alongside."""
    try:
        runs = [run_fedray(workload, python, env) for _ in range(repeats)]
    except RuntimeError as err:
        print(f"  {workload}: {str(err).splitlines()[0]}", file=sys.stderr)
        return {"workload": workload, "error": str(err)}
    result = {"workload": workload, "repeats": repeats, **median_of(runs)}
    if workload not in ("sweep", "sweep_fresh", "scale_100k"):
        from fedray.config import load_config

        cfg = load_config(CONFIGS[workload])
        result["floor_round_s"] = statistics.median(statistics.median(run_floor(cfg)[1:]) for _ in range(repeats))
        result["round_ratio"] = result["round_s"] / result["floor_round_s"]
    return result


def describe(result: dict, floor: dict) -> str:
    if "error" in result:
        return f"| {result['workload']} | failed | | | | | | | | |"
    get = lambda key, fmt=".1f": format(result[key], fmt) if key in result else "-"  # noqa: E731
    ratio = f"{result['end_to_end_s'] / floor['end_to_end_s']:.2f}"
    fixed = f"{result['fixed_s'] / floor['end_to_end_s']:.2f}" if "fixed_s" in result else "-"
    return (f"| {result['workload']} | {get('end_to_end_s')} | {ratio} | {fixed} | {get('prepare_s')} | "
            f"{get('start_s')} | {get('rounds_s')} | {get('finish_s')} | {get('teardown_s')} | "
            f"{get('round_s', '.3f')} | {get('peak_pss_gb', '.2f')} |")


HEADER = ("| workload | end-to-end s | x floor | fixed x floor | prepare s | start s | rounds s | finish s "
          "| teardown s | s/round | peak PSS GB |\n|---|---|---|---|---|---|---|---|---|---|---|")


def checkout(rev: str) -> Path:
    """The `fedray` package of revision `rev`, extracted to a temporary folder."""
    where = Path(tempfile.mkdtemp(prefix=f"fedray-{rev}-"))
    archive = subprocess.run(["git", "archive", rev, "fedray"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def table(paths: list[Path]) -> None:
    """A Markdown table of saved results side by side (e.g. before, after)."""
    for path in paths:
        saved = json.loads(path.read_text())
        print(f"\n{saved.get('label', path.stem)} ({saved.get('rev', '')}; load {saved.get('uptime', '?')})\n")
        print(HEADER)
        print(f"| Ray floor | {saved['floor']['end_to_end_s']:.1f} | 1.00 | | | | | | | | |")
        for result in saved["results"]:
            print(describe(result, saved["floor"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rev", help="benchmark this git revision's fedray (default: this checkout)")
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--table", nargs="+", type=Path, metavar="RESULTS_JSON", help="only print saved results")
    args = parser.parse_args()
    if args.table:
        return table(args.table)
    env = dict(os.environ)
    if args.rev:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout(args.rev)), env.get("PYTHONPATH", "")])
    load = os.getloadavg()
    floor = {k: statistics.median(f[k] for f in (ray_floor(sys.executable, env) for _ in range(args.repeats)))
             for k in ("end_to_end_s", "import_ray_s", "init_s", "actor_s", "shutdown_s")}
    print(f"Ray floor: {floor['end_to_end_s']:.1f} s (import ray {floor['import_ray_s']:.1f}, ray.init "
          f"{floor['init_s']:.1f}, actor with torch {floor['actor_s']:.1f}, shutdown {floor['shutdown_s']:.1f})")
    print(HEADER)
    results = []
    for workload in args.workloads:
        results.append(bench(workload, args.repeats, sys.executable, env))
        print(describe(results[-1], floor), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = {"label": args.label, "rev": args.rev or _head(), "cpu_count": os.cpu_count(),
             "uptime": f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} -> " + " ".join(f"{v:.1f}" for v in os.getloadavg()),
             "floor": floor, "results": results}
    path = args.out / f"{args.label}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(saved, indent=2))
    print(f"results in {path}")


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
