"""GrBFL against pixel models: accuracy after a fixed round budget, nodes per image,
client training time per round and bytes per round.

    python benchmarks/grbfl.py [--datasets mnist5k fashion] [--partitions dirichlet shards]
                               [--models cnn mlp grb_gnn] [--seeds 0 1 2] [--rounds 20]

Superseded by benchmarks/grbfl_compare.py (the authors' network and schedule). Every
run is configs/grbfl_mnist.yaml as first shipped (FIRST_SETTING) at full size (10
clients, all of them every round, one local epoch, Adam 0.003, batch 16) with the dataset, partition and
model swapped in, in one local Ray: `cnn` (16 and 32 channels, ~20k parameters,
near the GNN's 22k), the project's `mlp` (one hidden layer of 64, 51k), and
`grb_gnn` on the granular-ball graphs (`grb_gnn_paper`: the same on balls cut
with GrBFL's default settings, on request). `fashion` is Fashion-MNIST's IDX files
from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), cut to
a 5,000-image stratified subset like MNIST-5k; it is skipped when absent.
Reported: medians over seeds (the seed changes the split, the partition and the
initial weights). Segmentation time per image is measured once per dataset on
its 5,000 images, for the config's settings and GrBFL's defaults.
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

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fedray.config import load_config  # noqa: E402
from fedray.config.granular import GranularConfig  # noqa: E402
from fedray.data.datasets import DATASETS  # noqa: E402
from fedray.data.granular.segment import segment  # noqa: E402
from fedray.launcher import prepare, run  # noqa: E402

CONFIG = REPO / "configs" / "grbfl_mnist.yaml"
FIRST_SETTING = [  # the shipped config when these figures were taken (it has since moved to grb_gat)
    "data.max_examples=null", "data.partition=dirichlet", "data.alpha=0.5", "clients.num_clients=10",
    "server.clients_per_round=10", "data.granular.purity=0.95", "data.granular.threshold=60",
    "data.granular.var_threshold=2000", "model.name=grb_gnn", "model.hidden=[96,96,96]",
    "train.local_epochs=1", "train.optimizer=adam", "train.lr=0.003", "train.batch_size=16",
]
FASHION = Path("/usr/share/datasets/fashion-mnist")
DATASETS_ARGS = {
    "mnist5k": ["data.dataset=mnist5k", "data.max_examples=null"],
    "fashion": ["data.dataset=idx", f"data.path={FASHION}", "data.max_examples=5000"],
}
PARTITIONS = {
    "dirichlet": ["data.partition=dirichlet", "data.alpha=0.5"],
    "shards": ["data.partition=shards", "data.shards_per_client=2"],
}
MODELS = {
    "cnn": ["model.name=cnn", "model.hidden=[16,32]", "data.granular=null"],
    "mlp": ["model.name=mlp", "model.hidden=[64]", "data.granular=null"],
    "grb_gnn": [],  # the config's own: grb_gnn over granular balls
    "grb_gnn_paper": ["data.granular.purity=0.9", "data.granular.threshold=10",  # GrBFL's defaults
                      "data.granular.var_threshold=20"],
}


def run_one(dataset: str, partition: str, model: str, seed: int, rounds: int, out: Path) -> dict:
    cfg = load_config(CONFIG, [*FIRST_SETTING,
        f"output_dir={out}", f"name={dataset}-{partition}-{model}-{seed}", f"seed={seed}",
        f"server.rounds={rounds}", "train.local_epochs=1", "server.checkpoint_every=0",
        *DATASETS_ARGS[dataset], *PARTITIONS[partition], *MODELS[model],
    ])
    started = time.perf_counter()
    prepared = prepare(cfg)
    summary = run(prepared, console=lambda line: None)
    run_dir = Path(summary["run_dir"])
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    clients = pq.read_table(run_dir / "clients.parquet").to_pylist()
    return {
        "dataset": dataset, "partition": partition, "model": model, "seed": seed,
        "params": prepared.num_params,
        "final_accuracy": rows[-1]["eval_accuracy"],
        "best_accuracy": max(r["eval_accuracy"] for r in rows),
        "client_train_s": statistics.median(c["last_wall_s"] for c in clients),
        "bytes_per_round": statistics.mean(r["bytes_up"] + r["bytes_down"] for r in rows),
        "round_wall_s": statistics.median(r["round_wall_s"] for r in rows),
        "wall_s": time.perf_counter() - started,
    }


def segmentation_figures(dataset: str) -> dict:
    """Balls per image and seconds per image over the dataset's 5,000 images, for the
    config's settings and GrBFL's defaults (one process, this machine)."""
    cfg = load_config(CONFIG, [*FIRST_SETTING, *DATASETS_ARGS[dataset]])
    data = DATASETS.build(cfg.data.dataset, cfg.data)
    rows = np.random.default_rng(0).permutation(len(data.y))[:5000]
    images = data.x[rows].reshape(-1, *data.image_shape) * 255.0
    out = {}
    for name, settings in (("config", cfg.data.granular), ("paper_defaults", GranularConfig())):
        start = time.perf_counter()
        granules = segment(images, settings)
        seconds = time.perf_counter() - start
        out[name] = {"nodes_median": float(np.median(granules.num_nodes)),
                     "nodes_mean": float(granules.num_nodes.mean()),
                     "edges_mean": float(len(granules.edges) / len(images)),
                     "ms_per_image": 1000 * seconds / len(images)}
        print(f"{dataset} {name}: {out[name]}", flush=True)
    return out


def local_epoch_times(dataset: str, repeats: int) -> dict:
    """Seconds for one local epoch on client 0's shard (Dirichlet 0.5, seed 0), per model,
    in this process on one thread. The models take turns, `repeats` times, so a load
    that drifts over minutes biases none of them; medians are reported."""
    import torch

    from fedray.client.train import train_local
    from fedray.data.federated import build_federated_dataset
    from fedray.models.build import build_model
    from fedray.models.tasks import build_task

    torch.set_num_threads(1)
    prepared = {}
    for model in ("cnn", "mlp", "grb_gnn"):
        cfg = load_config(CONFIG, [*FIRST_SETTING, *DATASETS_ARGS[dataset], *PARTITIONS["dirichlet"], *MODELS[model],
                                   f"output_dir={tempfile.gettempdir()}/fedray-grbfl-bench"])
        data = build_federated_dataset(cfg.data, cfg.clients.num_clients, cfg.seed)
        task = build_task(data.info, cfg)
        prepared[model] = (cfg, task, task.prepare(data.shard(0), torch.device("cpu")),
                           build_model(cfg.model, data.info, cfg.seed))
    times: dict[str, list[float]] = {m: [] for m in prepared}
    for k in range(repeats + 1):  # the first pass warms up
        for model, (cfg, task, shard, net) in prepared.items():
            start = time.perf_counter()
            train_local(net, task, shard, cfg.train, seed=k)
            if k:
                times[model].append(time.perf_counter() - start)
    out = {m: {"epoch_s": statistics.median(t), "examples": prepared[m][1].num_examples(prepared[m][2])}
           for m, t in times.items()}
    print(f"{dataset} local epoch: {out}", flush=True)
    return out


def median_table(runs: list[dict]) -> list[dict]:
    keys = sorted({(r["dataset"], r["partition"], r["model"]) for r in runs},
                  key=lambda k: (k[0], k[1], list(MODELS).index(k[2])))
    table = []
    for dataset, partition, model in keys:
        mine = [r for r in runs if (r["dataset"], r["partition"], r["model"]) == (dataset, partition, model)]
        row = {"dataset": dataset, "partition": partition, "model": model, "seeds": len(mine),
               "params": mine[0]["params"]}
        for key in ("final_accuracy", "best_accuracy", "client_train_s", "bytes_per_round", "round_wall_s"):
            row[key] = statistics.median(r[key] for r in mine)
        table.append(row)
    return table


def run_all(datasets: list[str], args: argparse.Namespace) -> list[dict]:
    """Every (dataset, partition, model, seed) in turn, in one local Ray."""
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            for partition in args.partitions:
                for model in args.models:
                    for seed in args.seeds:
                        r = run_one(dataset, partition, model, seed, args.rounds, Path(tmp))
                        runs.append(r)
                        print(f"{dataset} {partition} {model} seed {seed}: accuracy {r['final_accuracy']:.3f}, "
                              f"client {r['client_train_s']:.2f} s/round, {r['bytes_per_round'] / 1e6:.2f} MB/round, "
                              f"{r['wall_s']:.0f} s", flush=True)
    ray.shutdown()
    return runs


def print_table(table: list[dict], rounds: int) -> None:
    print(f"\n| dataset | partition | model | params | accuracy after {rounds} rounds | best | "
          "client train s/round | MB/round (up+down) | round wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['dataset']} | {t['partition']} | {t['model']} | {t['params']:,} | {t['final_accuracy']:.3f} | "
              f"{t['best_accuracy']:.3f} | {t['client_train_s']:.2f} | {t['bytes_per_round'] / 1e6:.2f} | "
              f"{t['round_wall_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS_ARGS), default=list(DATASETS_ARGS))
    parser.add_argument("--partitions", nargs="+", choices=list(PARTITIONS), default=list(PARTITIONS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["cnn", "mlp", "grb_gnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-segmentation", dest="segmentation", action="store_false",
                        help="skip timing the segmentation of whole datasets")
    parser.add_argument("--timing-repeats", type=int, default=5,
                        help="interleaved one-epoch timings per model (0: skip)")
    parser.add_argument("--no-runs", dest="runs", action="store_false", help="only the timings")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    datasets = [d for d in args.datasets if d != "fashion" or FASHION.is_dir()]

    segmentation = {d: segmentation_figures(d) for d in datasets} if args.segmentation else {}
    epochs = {d: local_epoch_times(d, args.timing_repeats) for d in datasets} if args.timing_repeats else {}
    runs = run_all(datasets, args) if args.runs else []
    table = median_table(runs)
    print_table(table, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"grbfl-{stamp}.json").write_text(json.dumps(
        {"rounds": args.rounds, "seeds": args.seeds, "cpu_count": os.cpu_count(),
         "load_average": os.getloadavg(), "segmentation": segmentation, "local_epoch": epochs,
         "runs": runs, "table": table},
        indent=2))


if __name__ == "__main__":
    main()
