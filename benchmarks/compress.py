"""What compression buys: accuracy, bytes and time-to-accuracy per codec.

    python benchmarks/compress.py digits      [--variants ...] [--seeds 0 1 2]
    python benchmarks/compress.py digits_wide [--variants ...] [--seeds 0 1 2]
    python benchmarks/compress.py lora        [--variants ...] [--seeds 0]
    python benchmarks/compress.py table RESULTS.json [RESULTS.json ...]
    python benchmarks/compress.py plot RESULTS.json [RESULTS.json ...]

`digits` is configs/hetero_random.yaml (100 FLASH phones, label-skewed digits,
MLP 64-64-10, 10 clients a round, 80 rounds); `digits_wide` the same with a
0.3M-parameter MLP (hidden 512-512, 40 rounds), where transfers set the round
length; `lora` is configs/lora_tiny.yaml on FLASH bandwidths (6 rounds). Each
variant is a codec (overrides below); each run goes to `--out` and is reported
as final and best accuracy (perplexity for LoRA), cumulative MB up and down,
simulated seconds (and rounds) to the target accuracy, and the codec seconds per
round. The table shows medians over seeds (`table` prints it again for results
files of one workload, merged). `plot` writes `fedray report`'s plots for the
seed-0 runs of the results files.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fedray.cli.compare import time_to_accuracy  # noqa: E402
from fedray.config import load_config  # noqa: E402
from fedray.launcher import prepare, run  # noqa: E402

CONTENT_MLP = ("clients.codec={name: content, args: {rules: [{match: bias, codec: {name: fp16}}, "
               "{match: '^2\\.', codec: {name: int8}}], default: {name: gain, args: {rate: 0.5}}}}")
CONTENT_LORA = ("clients.codec={name: content, args: {rules: [{match: lora_A, codec: {name: int8}}, "
                "{match: lora_B, codec: {name: gain, args: {rate: 0.6}}}]}}")
CODECS = {
    "none": [],
    "fp16": ["clients.codec.name=fp16"],
    "int8": ["clients.codec.name=int8"],
    "qsgd": ["clients.codec={name: qsgd, args: {levels: 7, bucket: 128}}"],
    "top_k_1pct": ["clients.codec={name: top_k, args: {fraction: 0.01}}"],
    "top_k_5pct": ["clients.codec={name: top_k, args: {fraction: 0.05}}"],
    "gain_auto": ["clients.codec={name: gain, args: {rate: auto}}"],
    "gain_0.5": ["clients.codec={name: gain, args: {rate: 0.5}}"],
    "gain_auto_int8_down": ["clients.codec={name: gain, args: {rate: auto}}", "server.codec.name=int8"],
    "content_auto": ["clients.codec={name: content_auto, args: {budget: 0.1}}"],
}
WORKLOADS = {
    "digits": {"config": "configs/hetero_random.yaml", "target": 0.85, "overrides": [],
               "variants": ["none", "fp16", "int8", "qsgd", "top_k_1pct", "gain_auto", "content", "content_auto",
                            "top_k_5pct", "gain_0.5"],
               "content": [CONTENT_MLP]},
    "digits_wide": {"config": "configs/hetero_random.yaml", "target": 0.85,
                    "overrides": ["model.hidden=[512, 512]", "server.rounds=40", "server.checkpoint_every=0"],
                    "variants": ["none", "int8", "top_k_1pct", "gain_auto", "gain_auto_int8_down", "gain_0.5"],
                    "content": [CONTENT_MLP]},
    "lora": {"config": "configs/lora_tiny.yaml", "target": None,
             "overrides": ["server.rounds=6", "clients.profiles.source=flash", "server.checkpoint_every=0"],
             "variants": ["none", "fp16", "int8", "qsgd", "top_k_1pct", "gain_auto", "content", "content_auto",
                          "gain_0.5"],
             "content": [CONTENT_LORA]},
}


def overrides_for(workload: str, variant: str) -> list[str]:
    spec = WORKLOADS[workload]
    return [*spec["overrides"], *(spec["content"] if variant == "content" else CODECS[variant])]


def run_one(workload: str, variant: str, seed: int, out: Path, extra: list[str]) -> dict:
    spec = WORKLOADS[workload]
    cfg = load_config(REPO / spec["config"], [f"output_dir={out / workload}", f"name={variant}-{seed}",
                                              f"seed={seed}", *overrides_for(workload, variant), *extra])
    started = time.perf_counter()
    summary = run(prepare(cfg), console=lambda line: None)
    rows = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()
    result = {"workload": workload, "variant": variant, "seed": seed, "run_dir": summary["run_dir"],
              "rounds": len(rows), "wall_s": time.perf_counter() - started,
              "mb_up": sum(r["bytes_up"] for r in rows) / 1e6, "mb_down": sum(r["bytes_down"] for r in rows) / 1e6,
              "sim_total_s": rows[-1]["sim_time_s"],
              "encode_ms": 1e3 * _mean(r.get("encode_s", 0.0) for r in rows),
              "decode_ms": 1e3 * _mean(r.get("decode_s", 0.0) for r in rows)}
    if spec["target"] is None:
        result["final_perplexity"] = rows[-1]["eval_perplexity"]
        result["best_perplexity"] = min(r["eval_perplexity"] for r in rows)
    else:
        reached, sim_s, _ = time_to_accuracy(rows, spec["target"])
        result.update(final_accuracy=rows[-1]["eval_accuracy"], best_accuracy=max(r["eval_accuracy"] for r in rows),
                      round=reached, sim_s=sim_s)
    return result


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def median(values) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else math.nan


def table(workload: str, runs: list[dict]) -> str:
    """Markdown: medians over seeds per variant."""
    lora = WORKLOADS[workload]["target"] is None
    base = [r for r in runs if r["variant"] == "none"]
    base_up = median(r["mb_up"] for r in base)
    base_sim = median(r.get("sim_s") for r in base)
    quality = ["final ppl", "best ppl"] if lora else ["final acc", "best acc", "sim s to target", "speed-up",
                                                      "rounds to target"]
    head = ["codec", *quality, "MB up", "up vs none", "MB down", "sim s total", "encode ms/round",
            "decode ms/round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        m = {k: median(r.get(k) for r in mine) for k in
             ("final_accuracy", "best_accuracy", "sim_s", "round", "final_perplexity", "best_perplexity",
              "mb_up", "mb_down", "sim_total_s", "encode_ms", "decode_ms")}
        cells = ([f"{m['final_perplexity']:.2f}", f"{m['best_perplexity']:.2f}"] if lora else
                 [f"{m['final_accuracy']:.3f}", f"{m['best_accuracy']:.3f}", f"{m['sim_s']:.1f}",
                  f"{base_sim / m['sim_s']:.2f}x", f"{m['round']:.0f}"])
        lines.append("| " + " | ".join([variant, *cells, f"{m['mb_up']:.2f}", f"{base_up / m['mb_up']:.1f}x",
                                          f"{m['mb_down']:.2f}", f"{m['sim_total_s']:.0f}",
                                          f"{m['encode_ms']:.2f}", f"{m['decode_ms']:.2f}"]) + " |")
    return "\n".join(lines)


def plot(results: list[Path], out: Path, variants: list[str] | None) -> None:
    from fedray.experiments.report import load_runs, write_report

    runs = [r for path in results for r in json.loads(path.read_text())["runs"]
            if r["seed"] == 0 and (not variants or r["variant"] in variants)]
    report = write_report(load_runs([r["run_dir"] for r in runs]), out)
    print(report.table)
    print("\n".join(str(f) for f in report.files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=[*WORKLOADS, "table", "plot"])
    parser.add_argument("results", nargs="*", type=Path, help="table, plot: results files")
    parser.add_argument("--variants", nargs="+")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compress")
    parser.add_argument("--set", nargs="*", default=[], help="further config overrides, e.g. server.rounds=2")
    args = parser.parse_args()
    if args.workload == "plot":
        plot(args.results, args.out / "report", args.variants)
        return
    if args.workload == "table":
        loaded = [json.loads(path.read_text()) for path in args.results]
        print(table(loaded[0]["workload"], [r for result in loaded for r in result["runs"]]))
        return

    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    runs = []
    for variant in args.variants or WORKLOADS[args.workload]["variants"]:
        for seed in args.seeds:
            r = run_one(args.workload, variant, seed, args.out, args.set)
            runs.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    ray.shutdown()
    print(table(args.workload, runs))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{args.workload}-{stamp}.json"
    path.write_text(json.dumps({"workload": args.workload, "seeds": args.seeds, "runs": runs}, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
