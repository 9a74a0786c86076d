"""GrBFL against FedAvg on pixels at one schedule: accuracy, input size per image,
bytes per round and local compute per round.

    python benchmarks/grbfl_compare.py [--datasets mnist5k fashion] [--partitions iid dirichlet]
        [--models grb_gat grb_gat_small grb_gnn cnn mlp] [--seeds 0] [--rounds 10] [--epochs 10]

Every run is configs/grbfl_paper.yaml (the authors' setting: GrBFL's default
segmentation, SGD lr 0.01 momentum 0.9, batch 96) with the model, partition,
dataset, seed and schedule swapped in, in one local Ray, two client actors:
- `iid`: the authors' 3 clients on an IID split; `dirichlet`: 10 clients,
  Dirichlet 0.5 label skew, all of them every round;
- `grb_gat`: the authors' attention network at full width ([16, 32, 64], 16
  heads); `grb_gat_small`: a quarter of its width (the shipped config's);
  `grb_gnn`: fedray's GCN ([96, 96, 96]); `cnn` (16 and 32 channels) and `mlp`
  (one hidden layer of 64) on pixels.
Segmented shards are cached in one folder (--cache) across runs, so a graph
model's first run on a split pays for the segmentation and the others read it.
Each run appends a JSON line to --out, so an interrupted sweep keeps what it ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fedray.config import load_config  # noqa: E402
from fedray.launcher import prepare, run  # noqa: E402

CONFIG = REPO / "configs" / "grbfl_paper.yaml"
FASHION = Path("/usr/share/datasets/fashion-mnist")
DATASETS_ARGS = {
    "mnist5k": ["data.dataset=mnist5k", "data.max_examples=null"],
    "fashion": ["data.dataset=idx", f"data.path={FASHION}", "data.max_examples=5000"],
}
PARTITIONS = {
    "iid": ["data.partition=iid", "clients.num_clients=3", "server.clients_per_round=3"],
    "dirichlet": ["data.partition=dirichlet", "data.alpha=0.5", "clients.num_clients=10",
                  "server.clients_per_round=10"],
}
MODELS = {
    "grb_gat": [],  # the config's own: the authors' network at full width
    "grb_gat_small": ["model.hidden=[8,16,32]", "model.config.heads=8"],
    "grb_gnn": ["model.name=grb_gnn", "model.hidden=[96,96,96]"],
    "cnn": ["model.name=cnn", "model.hidden=[16,32]", "data.granular=null"],
    "mlp": ["model.name=mlp", "model.hidden=[64]", "data.granular=null"],
}
PIXEL_FEATURES = 1
"""Floats per pixel; a ball has len(NODE_FEATURES) (8) floats."""


def run_one(dataset: str, partition: str, model: str, seed: int, args: argparse.Namespace) -> dict:
    cfg = load_config(CONFIG, [
        f"output_dir={args.runs}", f"name={dataset}-{partition}-{model}-{seed}{args.tag}", f"seed={seed}",
        f"server.rounds={args.rounds}", f"train.local_epochs={args.epochs}", "server.checkpoint_every=0",
        "clients.placement=pool", "clients.pool_size=2", f"data.granular.cache_dir={args.cache}",
        *DATASETS_ARGS[dataset], *PARTITIONS[partition], *MODELS[model], *args.set,
    ])
    started = time.perf_counter()
    prepared = prepare(cfg)
    import ray

    for attempt in range(args.attempts):  # a shared machine's memory monitor may kill the actors
        try:
            summary = run(prepared, console=lambda line: None, fresh=attempt > 0)
        except ray.exceptions.RayError as err:  # killed while starting: no summary was written
            summary = {"status": f"failed: {type(err).__name__}", "run_dir": str(args.runs)}
        if summary["status"] == "completed":
            break
    run_dir = Path(summary["run_dir"])
    if summary["status"] != "completed":
        return {"dataset": dataset, "partition": partition, "model": model, "seed": seed,
                "status": summary["status"], "wall_s": time.perf_counter() - started}
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    clients = pq.read_table(run_dir / "clients.parquet").to_pylist()
    return {
        "dataset": dataset, "partition": partition, "model": model, "seed": seed, "status": "completed",
        "rounds": args.rounds, "epochs": args.epochs, "set": args.set, "params": prepared.num_params,
        "accuracy": [r["eval_accuracy"] for r in rows],
        "final_accuracy": rows[-1]["eval_accuracy"],
        "best_accuracy": max(r["eval_accuracy"] for r in rows),
        "client_train_s": statistics.median(c["last_wall_s"] for c in clients),  # measured, last round
        "examples_per_client": statistics.median(c["num_examples"] for c in clients),
        "bytes_up_per_round": statistics.mean(r["bytes_up"] for r in rows),
        "bytes_down_per_round": statistics.mean(r["bytes_down"] for r in rows),
        "wall_s": time.perf_counter() - started,
    }


def input_sizes(cache: Path) -> dict:
    """Balls, edges and floats per image over every segmented shard in the cache."""
    nodes, edges = [], []
    for path in sorted(cache.glob("*.arrow")):
        with ipc.open_file(path) as reader:
            table = reader.read_all()
        nodes += table.column("nodes").combine_chunks().value_lengths().to_pylist()
        edges += table.column("edges").combine_chunks().value_lengths().to_pylist()
    if not nodes:
        return {}
    return {"images": len(nodes), "balls_mean": float(np.mean(nodes)), "balls_median": float(np.median(nodes)),
            "edges_mean": float(np.mean(edges)), "floats_per_image_balls": 8 * float(np.mean(nodes)),
            "ints_per_image_edges": 2 * float(np.mean(edges)), "floats_per_image_pixels": 784 * PIXEL_FEATURES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS_ARGS), default=["mnist5k"])
    parser.add_argument("--partitions", nargs="+", choices=list(PARTITIONS), default=list(PARTITIONS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/fedray-grbfl-compare/runs"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fedray-grbfl-compare/granular_cache"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more overrides for every run, e.g. train.optimizer=adam train.lr=0.003")
    parser.add_argument("--tag", default="", help="appended to each run's name")
    parser.add_argument("--attempts", type=int, default=2, help="runs of a failed setting")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "grbfl_compare.jsonl")
    args = parser.parse_args()
    import ray

    args.out.parent.mkdir(parents=True, exist_ok=True)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        for dataset in args.datasets:
            for partition in args.partitions:
                for seed in args.seeds:
                    for model in args.models:
                        r = run_one(dataset, partition, model, seed, args)
                        with args.out.open("a") as fh:
                            fh.write(json.dumps(r) + "\n")
                        if r["status"] != "completed":
                            print(f"{dataset} {partition} {model} seed {seed}: {r['status']}", flush=True)
                            continue
                        print(f"{dataset} {partition} {model} seed {seed}: accuracy {r['final_accuracy']:.3f} "
                              f"(best {r['best_accuracy']:.3f}), {r['client_train_s']:.1f} s client round, "
                              f"{(r['bytes_up_per_round'] + r['bytes_down_per_round']) / 1e6:.2f} MB/round, "
                              f"{r['wall_s']:.0f} s", flush=True)
    finally:
        ray.shutdown()
    print(json.dumps(input_sizes(args.cache)), flush=True)


if __name__ == "__main__":
    main()
