"""A client's rights and worth on digits: unlearning a backdoor, and contribution evaluation.

    python benchmarks/lifecycle.py unlearning [--seeds 0 1 2]
    python benchmarks/lifecycle.py contribution [--seeds 0 1 2]
    python benchmarks/lifecycle.py scaling

One local Ray for all runs. Results go to benchmarks/results/lifecycle-*.json and
Markdown tables to stdout.

unlearning: configs/unlearning.yaml (5 clients, all in every round, 12 rounds of 2
local epochs; client 3 stamps a trigger on half its shard and relabels it 0; ledger
every round, GTG-Shapley). Per seed: the source run, a run that never had client 3
(`clients.excluded=[3]`), then `fedray unlearn --method retrain` and `--method
federaser` (calibration ratio 0.5, and a ledger of every 2nd round). Backdoor
success and clean accuracy on the held-out split; cost in rounds of client
training, local steps per client-round, and wall seconds of the method.

contribution: 5 clients of known worth (`known_clients`): 0 good, 1 good, 2 a
duplicate of 1 (the same examples), 3 low-data (5 % of the data), 4 noisy (sends
N(0, 0.02^2) noise instead of its update); all in every round, 10 rounds, ledger every
round. Each round is valued offline from the ledger by exact Shapley, GTG-Shapley
and leave-one-out (accuracy utility); the in-run GTG time per round is also shown.

scaling: 10 clients in every round for 3 rounds; each recorded round's first n
updates (n = 4 ... 10) valued by exact Shapley (2^n evaluations), GTG-Shapley and
leave-one-out, timed in this process (one torch thread, as the server actor with its
default `server.resources`): seconds and model evaluations per round, and GTG's L1
error against exact Shapley (relative to the exact values' L1 norm).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fedray.config import load_config  # noqa: E402
from fedray.launcher import prepare, run  # noqa: E402

UNLEARNING = str(HERE.parent / "configs" / "unlearning.yaml")
KNOWN = ["clients.num_clients=5", "server.clients_per_round=5", "clients.placement=pool", "clients.pool_size=2",
         "server.rounds=10", "train.local_epochs=2", "data.partition=benchmarks.lifecycle:known_clients",
         "clients.attack={name: gaussian, clients: [4], std: 0.02}", "server.validation.max_norm_ratio=null",
         "server.ledger.every=1", "server.contribution.name=gtg_shapley", "server.checkpoint_every=0"]
ROLES = ["good", "good", "duplicate of 1", "low-data", "noisy"]


def known_clients(labels, num_clients, cfg, rng):
    """Client 0: 35 %, 1: 35 %, 2: the same examples as 1, 3: 5 %, 4: the remaining 25 %."""
    order = rng.permutation(len(labels))
    cuts = np.cumsum([int(0.35 * len(order)), int(0.35 * len(order)), int(0.05 * len(order))])
    good0, good1, low, noisy = np.split(order, cuts)
    return [np.sort(s) for s in (good0, good1, good1.copy(), low, noisy)]


def unlearning(seeds: list[int]) -> dict:
    from fedray.cli.main import main as cli
    from fedray.lifecycle.backdoor import Probe
    from fedray.server.checkpoint import latest_checkpoint, load_checkpoint

    def final(run_dir):
        return load_checkpoint(latest_checkpoint(Path(run_dir) / "checkpoints")).params

    table: dict = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out:
            common = [f"seed={seed}", f"output_dir={out}"]
            for every in (1, 2):
                cfg = load_config(UNLEARNING, [*common, f"name=source{every}", f"server.ledger.every={every}"])
                source = run(prepare(cfg), console=lambda line: None)
                if every == 1:
                    prepared = prepare(cfg)
                    probe = Probe(cfg, prepared.dataset.info, prepared.dataset.test)
                    record(table, "source run (with client 3)", probe.metrics(final(source["run_dir"])),
                           cfg.server.rounds, source["wall_s"])
                    never = run(prepare(load_config(UNLEARNING, [*common, "name=never", "clients.excluded=[3]"])),
                                console=lambda line: None)
                    record(table, "never had client 3", probe.metrics(final(never["run_dir"])),
                           cfg.server.rounds, never["wall_s"])
                methods = ["retrain", "federaser"] if every == 1 else ["federaser"]
                for method in methods:
                    name = f"{method}{every}"
                    assert cli(["unlearn", source["run_dir"], "--clients", "3", "--method", method,
                                f"name={name}", f"output_dir={out}"]) == 0
                    section = json.loads((Path(out) / name / "summary.json").read_text())["unlearning"]
                    label = method if method == "retrain" else f"federaser, ledger every {every} round(s)"
                    record(table, label, section["after"], section["rounds_run"], section["wall_s"])
        print(f"  seed {seed} done", flush=True)
    print("\n| model | backdoor success | clean accuracy | rounds of client training | wall s |")
    print("|---|---|---|---|---|")
    for label, row in table.items():
        medians = {k: statistics.median(v) for k, v in row.items()}
        print(f"| {label} | {medians['backdoor_success']:.3f} | {medians['accuracy']:.3f} | "
              f"{medians['rounds']:.0f} | {medians['wall_s']:.1f} |")
    return table


def record(table: dict, label: str, metrics: dict, rounds: int, wall_s: float) -> None:
    row = table.setdefault(label, {"backdoor_success": [], "accuracy": [], "rounds": [], "wall_s": []})
    for key, value in (("backdoor_success", metrics["backdoor_success"]), ("accuracy", metrics["accuracy"]),
                       ("rounds", rounds), ("wall_s", wall_s)):
        row[key].append(value)


def ledger_games(run_dir: str, cfg, probe, limit: int | None = None):
    """Each recorded round as (base params, weights, updates), replayed from the initial model
    with the run's own weighted mean (FedAvg, server learning rate 1)."""
    from fedray.lifecycle.ledger import read_round
    from fedray.server.rundir import read_parquet
    from fedray.strategy.aggregate import WeightedMean

    params = probe.initial.copy()
    for path in sorted((Path(run_dir) / "ledger").glob("round_*.parquet")):
        stored = read_round(read_parquet(path), str(path))
        updates = [stored.update(i) for i in range(len(stored.clients))]
        yield params.copy(), stored.weights[:limit], updates[:limit]
        mean = WeightedMean(params.size)
        for w, u in zip(stored.weights, updates):
            mean.add(0, w, u)
        params = params + mean.result()[0]


def valuations(base, weights, updates, utility, seed: int) -> dict:
    """{method: (values, seconds, evaluations)} for one round."""
    from fedray.lifecycle.contribution import RoundGame, exact_shapley, gtg_shapley, leave_one_out

    out = {}
    for name, valuer in (("exact Shapley", exact_shapley()), ("GTG-Shapley", gtg_shapley()),
                         ("leave-one-out", leave_one_out())):
        game = RoundGame(base, weights, updates, utility)
        started = time.perf_counter()
        values = valuer.value(game, np.random.default_rng(seed)).values
        out[name] = (values, time.perf_counter() - started, game.evaluations)
    return out


def contribution(seeds: list[int]) -> dict:
    import pyarrow.parquet as pq

    from fedray.lifecycle.backdoor import Probe

    totals: dict = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(None, [*KNOWN, f"seed={seed}", f"output_dir={out}", "name=known"])
            summary = run(prepare(cfg), console=lambda line: None)
            in_run = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pydict()["contribution_s"]
            totals.setdefault("in-run GTG s/round", []).append(statistics.median(in_run))
            prepared = prepare(cfg)
            probe = Probe(cfg, prepared.dataset.info, prepared.dataset.test)
            utility = lambda params: probe.metrics(params)["accuracy"]  # noqa: E731
            seed_totals: dict = {}
            for base, weights, updates in ledger_games(summary["run_dir"], cfg, probe):
                for name, (values, _, _) in valuations(base, weights, updates, utility, seed).items():
                    seed_totals[name] = seed_totals.get(name, 0) + values
            for name, values in seed_totals.items():
                totals.setdefault(name, []).append(values.tolist())
        print(f"  seed {seed} done", flush=True)
    print("\n| method | " + " | ".join(f"{c}: {role}" for c, role in enumerate(ROLES)) + " | rank order |")
    print("|---|" + "---|" * (len(ROLES) + 1))
    for name in ("exact Shapley", "GTG-Shapley", "leave-one-out"):
        medians = np.median(np.array(totals[name]), axis=0)
        order = " > ".join(str(int(c)) for c in np.argsort(-medians))
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in medians) + f" | {order} |")
    print(f"\nin-run GTG-Shapley: median {statistics.median(totals['in-run GTG s/round']):.3f} s per round")
    return totals


def scaling(seeds: list[int]) -> dict:
    from fedray.lifecycle.backdoor import Probe

    table: dict = {}
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, ["clients.num_clients=10", "server.clients_per_round=10", "clients.placement=pool",
                                 "clients.pool_size=2", "server.rounds=3", "data.partition=dirichlet",
                                 "server.ledger.every=1", "server.checkpoint_every=0", f"seed={seeds[0]}",
                                 f"output_dir={out}", "name=scaling"])
        summary = run(prepare(cfg), console=lambda line: None)
        prepared = prepare(cfg)
        probe = Probe(cfg, prepared.dataset.info, prepared.dataset.test)
        utility = lambda params: probe.metrics(params)["accuracy"]  # noqa: E731
        for n in (4, 6, 8, 10):
            for base, weights, updates in ledger_games(summary["run_dir"], cfg, probe, limit=n):
                result = valuations(base, weights, updates, utility, seeds[0])
                exact = result["exact Shapley"][0]
                for name, (values, seconds, evaluations) in result.items():
                    row = table.setdefault(n, {}).setdefault(name, {"s": [], "evals": [], "error": []})
                    row["s"].append(seconds)
                    row["evals"].append(evaluations)
                    row["error"].append(float(np.abs(values - exact).sum() / max(np.abs(exact).sum(), 1e-12)))
    print("\n| clients per round | method | s per round | evaluations per round | L1 error vs exact |")
    print("|---|---|---|---|---|")
    for n, methods in table.items():
        for name, row in methods.items():
            print(f"| {n} | {name} | {statistics.median(row['s']):.3f} | {statistics.median(row['evals']):.0f} | "
                  f"{statistics.median(row['error']):.3f} |")
    return table


def main() -> None:
    import ray
    import torch

    torch.set_num_threads(1)  # valuations run here as in the server actor: one thread

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["unlearning", "contribution", "scaling"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        table = {"unlearning": unlearning, "contribution": contribution, "scaling": scaling}[args.experiment](args.seeds)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"lifecycle-{args.experiment}-{stamp}.json").write_text(json.dumps(
            {"seeds": args.seeds, "wall_s": time.perf_counter() - started, "table": table}, indent=2, default=str))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
