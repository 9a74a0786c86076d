"""Ownership and time on digits: watermark robustness, and forgetting in continual FL.

    python benchmarks/ownership.py watermark [--seeds 0 1 2]
    python benchmarks/ownership.py watermark-lora [--seeds 0 1 2]
    python benchmarks/ownership.py continual [--seeds 0 1 2] [--methods 'ewc (lam 1e7)' ...]

One local Ray for all runs (each run starts its own server and client actors).
Every figure is a median over seeds of accuracies or bit error rates, which do not
depend on the machine's load. Results go to benchmarks/results/ownership-*.json and
Markdown tables to stdout.

watermark: configs/watermark.yaml as shipped (10 clients, Dirichlet 0.5, 5 per
round, 20 rounds; owners 0 and 1 embed 64 bits each in the classifier layer), the
same run without the watermark, and the backdoor scheme (16 triggers per owner,
weight 5) in its place. Then, on a copy of each final global model: magnitude pruning
of 30% and 50% of every tensor, int8 quantisation, fine-tuning on fresh data (the
held-out split, never trained on; plain SGD, lr 0.05, batch 32) for 1, 5 and 20
epochs, and 10 FedAvg rounds on it (the held-out split cut into 5 shards, one local
epoch each per round) without the watermark term.
watermark-lora: a LoRA adapter (rank 4 on q and v) of a tiny llama (hidden 64, 2
layers) over 4 Shakespeare roles, all 4 clients per round, 6 rounds of 10 local
steps; client 0 embeds 64 bits in the adapter (`params: lora_`). Held-out
perplexity with and without the watermark, and the BER after pruning 30% of each
adapter tensor, int8, and 20 steps of fine-tuning on the held-out split.
continual: configs/continual.yaml (digits 0-4 for 10 rounds, then 5-9 for 10; 10
clients IID, 5 per round) with no method (naive), EWC, replay and the server-side
task anchor; average accuracy and forgetting after the last round, and the
task-accuracy matrix.
"""

from __future__ import annotations

import argparse
import copy
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

WATERMARK = str(HERE.parent / "configs" / "watermark.yaml")
CONTINUAL = str(HERE.parent / "configs" / "continual.yaml")
SCHEMES = {"feature": None, "backdoor": {"num_triggers": 16, "weight": 5.0}}
"""Each scheme's `server.watermark.args` (None: the config's own)."""
METHODS = {
    "naive": ["clients.objective=[]"],
    "ewc (lam 1e6)": ["clients.objective=[{name: ewc, args: {lam: 1000000.0}}]"],
    "ewc (lam 1e7)": ["clients.objective=[{name: ewc, args: {lam: 10000000.0}}]"],
    "replay (64 examples)": ["clients.objective=[{name: replay, args: {buffer_size: 64}}]"],
    "task_anchor (0.2, server)": ["clients.objective=[]",
                                  "server.transforms=[{name: task_anchor, args: {strength: 0.2}}]"],
}


def one_run(config: str | None, overrides: list[str], seed: int, out: str, name: str):
    """(run directory, metrics.parquet rows)."""
    import pyarrow.parquet as pq

    cfg = load_config(config, [*overrides, f"seed={seed}", f"output_dir={out}", f"name={name}"])
    summary = run(prepare(cfg), console=lambda line: None)
    assert summary["status"] == "completed", summary
    return summary["run_dir"], pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()


def attacked(run_dir: str, keys: list[dict], test) -> dict[str, float]:
    """Mean over the owners' keys of the watermark's evidence (BER or trigger accuracy)
    on the final model, and on copies of it after each attack."""
    from fedray.cli.watermark import load_model
    from fedray.lifecycle.watermark import fine_tune, prune_by_magnitude, quantize_int8, verify
    from fedray.models.tasks import Classification

    task = Classification()
    attacks = {"none": lambda m: None, "prune 30%": lambda m: prune_by_magnitude(m.parameters(), 0.3),
               "prune 50%": lambda m: prune_by_magnitude(m.parameters(), 0.5),
               "int8": lambda m: quantize_int8(m.parameters())}
    attacks.update({f"fine-tune {e} ep": (lambda m, e=e: fine_tune(m, task, test, epochs=e, lr=0.05))
                    for e in (1, 5, 20)})
    attacks["10 FedAvg rounds"] = lambda m: federated_fine_tune(m, task, test, rounds=10)
    model, _ = load_model(run_dir)
    out = {}
    for label, attack in attacks.items():
        copied = copy.deepcopy(model)
        attack(copied)
        results = [verify(copied, key) for key in keys]
        out[label] = statistics.mean(r.get("ber", r.get("trigger_accuracy")) for r in results)
        out[f"{label} p"] = max(r["p_value"] for r in results)
    return out


def federated_fine_tune(model, task, data, rounds: int, shards: int = 5) -> None:
    """FedAvg on `data` cut into `shards` clients (one local epoch each), in place."""
    import torch

    from fedray.lifecycle.watermark import fine_tune

    x, y = data
    parts = [(x[i::shards], y[i::shards]) for i in range(shards)]
    for r in range(rounds):
        start = copy.deepcopy(model.state_dict())
        total = {k: torch.zeros_like(v) for k, v in start.items()}
        for i, part in enumerate(parts):
            model.load_state_dict(start)
            fine_tune(model, task, part, epochs=1, lr=0.05, seed=r * shards + i)
            for k, v in model.state_dict().items():
                total[k] += v * (len(part[1]) / len(y))
        model.load_state_dict(total)


def with_scheme(folder: str, scheme: str, args: dict) -> str:
    """configs/watermark.yaml with another scheme (overrides would merge the two `args`)."""
    import yaml

    config = yaml.safe_load(Path(WATERMARK).read_text())
    config["server"]["watermark"].update(name=scheme, args=args)
    path = Path(folder) / f"watermark-{scheme}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def watermark(seeds: list[int]) -> dict:
    import torch

    from fedray.lifecycle.watermark import key_path, read_key
    from fedray.models.tasks import Classification

    table: dict = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as keys_dir:
            plain_dir, plain = one_run(WATERMARK, ["server.watermark.name=null"], seed, out, "plain")
            test = Classification().prepare(prepare(load_config(WATERMARK, [f"seed={seed}"])).dataset.test,
                                            torch.device("cpu"))
            for scheme, args in SCHEMES.items():
                keys_at = f"{keys_dir}/{scheme}"
                config = WATERMARK if args is None else with_scheme(out, scheme, args)
                marked_dir, marked = one_run(config, [f"server.watermark.keys={keys_at}"], seed, out, scheme)
                keys = [read_key(key_path(keys_at, owner)) for owner in (0, 1)]
                row = attacked(marked_dir, keys, test)
                row["unmarked model"] = attacked(plain_dir, keys, test)["none"]
                row["accuracy"], row["accuracy unmarked"] = marked[-1]["eval_accuracy"], plain[-1]["eval_accuracy"]
                table.setdefault(scheme, []).append(row)
                print(f"  seed {seed} {scheme}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    medians = {s: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for s, rows in table.items()}
    columns = ["none", "prune 30%", "prune 50%", "int8", "fine-tune 1 ep", "fine-tune 5 ep", "fine-tune 20 ep",
               "10 FedAvg rounds", "unmarked model"]
    print("\n| scheme (evidence) | " + " | ".join(columns) + " | accuracy (unmarked) |")
    print("|---|" + "---|" * (len(columns) + 1))
    for scheme, m in medians.items():
        what = "BER" if scheme == "feature" else "trigger accuracy"
        print(f"| {scheme} ({what}) | " + " | ".join(f"{m[c]:.3f}" for c in columns)
              + f" | {m['accuracy']:.3f} ({m['accuracy unmarked']:.3f}) |")
    return {"per_seed": table, "median": medians}


LORA = ["data.dataset=shakespeare", "data.partition=natural", "data.max_owners=4", "data.seq_len=32",
        "data.test_fraction=0.1", "model.name=hf_causal_lm",
        "model.config={model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}",
        "model.peft={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}", "clients.num_clients=4",
        "server.clients_per_round=4", "clients.placement=pool", "clients.pool_size=2", "train.local_steps=10",
        "train.batch_size=8", "train.optimizer=adamw", "train.lr=0.01", "server.rounds=6"]


def watermark_lora(seeds: list[int]) -> dict:
    import torch

    from fedray.cli.watermark import load_model
    from fedray.lifecycle.watermark import fine_tune, key_path, prune_by_magnitude, quantize_int8, read_key, verify
    from fedray.models.tasks import CausalLM

    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as keys_dir:
            embed = ["server.watermark.name=feature", f"server.watermark.keys={keys_dir}",
                     "server.watermark.args={num_bits: 64, params: lora_}"]
            marked_dir, marked = one_run(None, [*LORA, *embed], seed, out, "marked")
            _, plain = one_run(None, LORA, seed, out, "plain")
            key = read_key(key_path(keys_dir, 0))
            test = CausalLM().prepare(prepare(load_config(None, [*LORA, f"seed={seed}"])).dataset.test,
                                      torch.device("cpu"))
            row = {"perplexity": marked[-1]["eval_perplexity"], "perplexity unmarked": plain[-1]["eval_perplexity"]}
            for label, attack in (("none", lambda m: None),
                                  ("prune 30%", lambda m: prune_by_magnitude(adapters(m), 0.3)),
                                  ("int8", lambda m: quantize_int8(adapters(m))),
                                  ("fine-tune 20 steps", lambda m: fine_tune(m, CausalLM(), test[:160], 1, 0.05, 8))):
                model, _ = load_model(marked_dir)
                attack(model)
                row[label] = verify(model, key)["ber"]
            rows.append(row)
            print(f"  seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print("\n| BER: none | prune 30% | int8 | fine-tune 20 steps | perplexity (unmarked) |\n|---|---|---|---|---|")
    print(f"| {median['none']:.3f} | {median['prune 30%']:.3f} | {median['int8']:.3f} | "
          f"{median['fine-tune 20 steps']:.3f} | {median['perplexity']:.2f} ({median['perplexity unmarked']:.2f}) |")
    return {"per_seed": rows, "median": median}


def adapters(model) -> list:
    """The LoRA tensors of a PEFT model (what pruning and quantising an adapter touch)."""
    return [p for name, p in model.named_parameters() if "lora_" in name]


def continual(seeds: list[int], methods: list[str] | None = None) -> dict:
    from fedray.lifecycle.continual.metrics import task_matrix

    table: dict = {}
    for method, overrides in METHODS.items():
        if methods and method not in methods:
            continue
        for seed in seeds:
            with tempfile.TemporaryDirectory() as out:
                _, rows = one_run(CONTINUAL, overrides, seed, out, "continual")
            last = rows[-1]
            table.setdefault(method, []).append({"avg_acc": last["avg_acc"], "forgetting": last["forgetting"],
                                                 "matrix": task_matrix(rows).tolist()})
            print(f"  {method} seed {seed}: avg_acc {last['avg_acc']:.3f} forgetting {last['forgetting']:.3f}",
                  flush=True)
    print("\n| method | average accuracy (median; per seed) | forgetting (median; per seed) | "
          "task 0 after task 0 / after task 1 | task 1 after task 1 |")
    print("|---|---|---|---|---|")
    for method, runs in table.items():
        cells = []
        for key in ("avg_acc", "forgetting"):
            values = [r[key] for r in runs]
            cells.append(f"{statistics.median(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        m = [[statistics.median(r["matrix"][i][j] for r in runs) for j in range(2)] for i in range(2)]
        print(f"| {method} | {cells[0]} | {cells[1]} | {m[0][0]:.3f} / {m[1][0]:.3f} | {m[1][1]:.3f} |")
    return table


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["watermark", "watermark-lora", "continual"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="continual: only these methods")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        if args.experiment == "continual":
            table = continual(args.seeds, args.methods)
        else:
            table = (watermark if args.experiment == "watermark" else watermark_lora)(args.seeds)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"ownership-{args.experiment}-{stamp}.json").write_text(json.dumps(
            {"seeds": args.seeds, "wall_s": time.perf_counter() - started, "table": table}, indent=2))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
