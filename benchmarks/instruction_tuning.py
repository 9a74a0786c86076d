"""Benchmark of examples/instruction_tuning: held-out verifier accuracy of SmolLM2-135M-Instruct
per reasoning-gym family for the base model, local-only training, FedAvg and FedProx.

    python benchmarks/instruction_tuning.py [--variants base,local,fedavg,fedprox] [--run NAME=RUN_DIR] [key=value ...]

One local Ray, the example's config and seed for every variant:
  base     the model as shipped: one round at lr 1e-12 (LoRA's B starts at zero, so the
           adapter changes nothing) and its evaluation;
  local    each family's client alone (num_clients 1, that family's data only), for
           the same rounds and local steps as the federated runs: local-only training,
           computed as one single-client run per client (not a `local` strategy), scored
           on as many of its family's held-out prompts as the federated runs use;
  fedavg   the example as it is (8 clients, one family each);
  fedprox  the same with FedProx (mu 0.01).
Accuracy is the mean verifier score of the greedily generated answers to the same
held-out prompts (data.instruct.eval_examples per run; per family for `local`).
Seconds per round (median), MB per round, tokens/s per client. Each variant's
results are merged into benchmarks/results/instruction_tuning.json as it finishes
(with the overrides it ran under), and a Markdown table goes to stdout; `uptime` is
recorded, since wall-clock figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIG = REPO / "examples" / "instruction_tuning" / "config.yaml"
VARIANTS = {
    "base": ["server.rounds=1", "train.lr=1e-12", "train.local_steps=1", "server.budget_mb=null"],
    "fedavg": [],
    "fedprox": ["server.strategy.name=fedprox", "server.strategy.args={mu: 0.01}"],
}


def one_run(name: str, overrides: list[str], output_dir: Path) -> dict:
    from fedray.config import load_config
    from fedray.launcher import prepare, run

    cfg = load_config(CONFIG, [f"output_dir={output_dir}", f"name=instruct-{name}", *overrides])
    summary = run(prepare(cfg), console=lambda line: print(f"  [{name}] {line}", flush=True))
    return summarise(Path(summary["run_dir"]), summary)


def summarise(run_dir: Path, summary: dict | None = None) -> dict:
    """A finished run's figures, from its run directory (`--run NAME=DIR` reads one made
    elsewhere, e.g. by the README's `fedray run`)."""
    from fedray.config import load_config

    cfg = load_config(run_dir / "config.yaml", [])
    summary = summary or json.loads((run_dir / "summary.json").read_text())
    rounds = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    clients = pq.read_table(run_dir / "clients.parquet").to_pylist()
    last = rounds[-1]
    tokens = cfg.train.local_steps * cfg.train.batch_size * cfg.data.seq_len  # padded tokens per fit
    return {
        "status": summary["status"],
        "run_dir": str(run_dir),
        "rounds": len(rounds),
        "accuracy": last["eval_accuracy"],
        "accuracy_by_round": [r["eval_accuracy"] for r in rounds],
        "eval_loss": last.get("eval_loss"),
        "per_task": {k[4:]: v for k, v in last.items() if k.startswith("acc/")},
        "median_round_s": round(statistics.median(r["round_wall_s"] for r in rounds), 1),
        "mb_per_round": round(statistics.median((r["bytes_up"] + r["bytes_down"]) / 1e6 for r in rounds), 2),
        "client_tokens_per_s": round(statistics.median(tokens / c["last_wall_s"] for c in clients
                                                       if c.get("last_wall_s")), 1),
        "communication": summary.get("communication"),
    }


def local_only(overrides: list[str], output_dir: Path) -> dict:
    """Each family trained by its client alone; the per-family accuracies of those runs."""
    from fedray.config import load_config

    federated = load_config(CONFIG, overrides)
    families = federated.data.reasoning_gym.tasks
    per_family = max(1, federated.data.instruct.eval_examples // len(families))  # as many prompts as FedAvg's
    per_task, runs = {}, {}
    for family in families:
        runs[family] = one_run(f"local-{family}", [
            *overrides, f"data.reasoning_gym.tasks=[{family}]", "clients.num_clients=1", "clients.pool_size=1",
            "server.clients_per_round=1", "server.budget_mb=null", f"data.instruct.eval_examples={per_family}"],
            output_dir)
        per_task[family] = runs[family]["per_task"][family]
    return {"accuracy": statistics.mean(per_task.values()), "per_task": per_task,
            "median_round_s": statistics.median(r["median_round_s"] for r in runs.values()),
            "mb_per_round": sum(r["mb_per_round"] for r in runs.values()), "runs": runs}


def table(results: dict) -> str:
    families = next(iter(results.values()))["per_task"]
    head = "| variant | mean acc | " + " | ".join(families) + " | s/round | MB/round |"
    rule = "|" + "---|" * (len(families) + 4)
    lines = [head, rule]
    for name, r in results.items():
        cells = " | ".join(f"{r['per_task'].get(f, float('nan')):.2f}" for f in families)
        lines.append(f"| {name} | {r['accuracy']:.3f} | {cells} | {r['median_round_s']} | {r['mb_per_round']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="base,local,fedavg,fedprox")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "bench_instruct")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="take variant NAME from a finished run instead of running it")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. server.rounds=3)")
    args = parser.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = REPO / "benchmarks" / "results" / "instruction_tuning.json"
    saved = json.loads(out.read_text()) if out.is_file() else {"results": {}}  # earlier variants are kept
    results = {}
    for given in args.run:
        name, _, run_dir = given.partition("=")
        results[name] = summarise(Path(run_dir))
        saved["results"][name] = {**results[name], "uptime": load, "overrides": args.overrides}
    if not args.variants.strip(","):
        out.write_text(json.dumps(saved, indent=2))
        print(table(results))
        return
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s node-start wait
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
            break
        except Exception as err:  # noqa: BLE001  (Ray raises a bare Exception here)
            print(f"ray.init attempt {attempt + 1} failed: {err}", flush=True)
            ray.shutdown()
    else:
        raise SystemExit("could not start a local Ray")
    try:
        for name in filter(None, args.variants.split(",")):
            if name == "local":
                results[name] = local_only(args.overrides, args.output_dir)
            else:
                results[name] = one_run(name, args.overrides + VARIANTS[name], args.output_dir)
            saved["results"][name] = {**results[name], "uptime": load, "overrides": args.overrides}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(saved, indent=2))
            print(table(results), flush=True)
    finally:
        ray.shutdown()
    print(table(results))
    print(f"uptime: {load}")


if __name__ == "__main__":
    main()
