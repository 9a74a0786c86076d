"""Privacy on digits: accuracy against epsilon, membership inference, update inversion,
and what SecAgg+ costs per round.

    python benchmarks/privacy.py accuracy [--seeds 0 1 2]   # DP-FedAvg runs + membership inference
    python benchmarks/privacy.py inversion                  # one example's update, with and without DP
    python benchmarks/privacy.py secagg [--repeats 3]       # protocol cost for 10/50/100 clients

accuracy: configs/dp_fedavg.yaml (50 clients, Poisson q = 0.2, clip 0.5, 30 rounds,
delta 1e-3) at noise multipliers 0.5, 1.0 and 2.0, and without DP (same sampling);
median over seeds of the final test accuracy, the epsilon the accountant reports,
and the membership-inference AUC of the final global model on client 0's training
examples against as many held-out ones. `memorize` runs a small federation that
overfits (5 clients, all per round, 10 local epochs, hidden 256, 40 rounds) with
and without DP, where membership inference has something to find.

secagg: the protocol in one process (no Ray, so only its own cost is measured) for
n clients sending the digits MLP's update (4,810 floats): per client, the
milliseconds of its four stages and the bytes it sends and receives; on the
server, the milliseconds to route shares and remove the masks. Plain aggregation:
each client sends 4 bytes per float and the server takes the weighted mean.
Timings are medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fedray.config import load_config  # noqa: E402

CONFIG = HERE.parent / "configs" / "dp_fedavg.yaml"
VARIANTS = {
    "no DP": ["server.privacy=null"],
    "z = 0.5": ["server.privacy.args.noise_multiplier=0.5"],
    "z = 1.0": ["server.privacy.args.noise_multiplier=1.0"],
    "z = 2.0": ["server.privacy.args.noise_multiplier=2.0"],
}
MEMORIZE = ["clients.num_clients=5", "server.clients_per_round=5", "server.selection.name=random",
            "train.local_epochs=10", "model.hidden=[256]", "server.rounds=40", "train.batch_size=16",
            "server.privacy.args.clip_norm=2.0"]
MEMORIZE_VARIANTS = {"memorize, no DP": ["server.privacy=null"],
                     "memorize, z = 1.0": ["server.privacy.args.noise_multiplier=1.0"]}


def membership(cfg, prepared, run_dir) -> float:
    """AUC of the loss-threshold attack on the final global model: client 0's training
    examples (members) against as many held-out ones."""
    from fedray.data.arrow import to_numpy
    from fedray.models.build import build_model
    from fedray.models.flat import param_spec, set_flat
    from fedray.privacy.attacks import membership_auc
    from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
    import torch

    state = load_checkpoint(latest_checkpoint(Path(run_dir) / "checkpoints"))
    model = build_model(cfg.model, prepared.dataset.info, cfg.seed)
    set_flat(model, param_spec(model), state.params)
    members = [torch.tensor(a) for a in to_numpy(prepared.dataset.shard(0))]
    held = [torch.tensor(a) for a in to_numpy(prepared.dataset.test)]
    n = min(len(members[1]), len(held[1]))
    return membership_auc(model, (members[0][:n], members[1][:n]), (held[0][:n], held[1][:n]))


def accuracy(seeds: list[int], out: Path) -> None:
    import pyarrow.parquet as pq
    import ray

    from fedray.launcher import prepare, run

    results = {}
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    groups = [(VARIANTS, []), (MEMORIZE_VARIANTS, MEMORIZE)]
    with tempfile.TemporaryDirectory() as tmp:
        for variants, base in groups:
            for name, overrides in variants.items():
                rows = []
                for seed in seeds:
                    cfg = load_config(CONFIG, [f"output_dir={tmp}", f"name=r{len(results)}-{seed}", f"seed={seed}",
                                               "server.checkpoint_every=1000", *base, *overrides])
                    prepared = prepare(cfg)
                    summary = run(prepared, console=lambda line: None)
                    last = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()[-1]
                    rows.append({"accuracy": last["eval_accuracy"], "epsilon": last.get("dp_epsilon", math.inf),
                                 "auc": membership(cfg, prepared, summary["run_dir"]), "wall_s": summary["wall_s"]})
                    print(name, seed, rows[-1], flush=True)
                results[name] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                results[name]["runs"] = rows
    ray.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy-accuracy.json").write_text(json.dumps(results, indent=1))
    print("| variant | final accuracy | epsilon (delta 1e-3) | membership AUC |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['accuracy']:.4f} | {r['epsilon']:.3g} | {r['auc']:.3f} |")


def inversion(out: Path) -> None:
    """One digits example, one SGD step of the MLP; the input recovered from the first
    layer's update: cosine similarity to the real input, without DP, with clipping
    alone, and with DP-FedAvg's noise as the server would see one client's share of
    it (std z C on the update: z C / K on a mean over K)."""
    import torch

    from fedray.privacy.attacks import cosine, invert_first_layer

    x_all, y_all = _digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    rng = np.random.default_rng(0)
    results = {}
    for name, clip, z in (("no DP", None, 0.0), ("clip 0.5", 0.5, 0.0), ("clip 0.5, z = 0.5", 0.5, 0.5),
                          ("clip 0.5, z = 1.0", 0.5, 1.0)):
        sims = []
        for i in range(50):
            x = torch.tensor(x_all[i : i + 1], dtype=torch.float32)
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), torch.tensor(y_all[i : i + 1])).backward()
            update = -0.1 * torch.cat([p.grad.flatten() for p in model.parameters()]).numpy()
            if clip is not None:
                update = update * min(1.0, clip / np.linalg.norm(update))
            update = update + rng.normal(0, z * (clip or 0), update.shape)
            weight, bias = update[: 64 * 64].reshape(64, 64), update[64 * 64 : 64 * 64 + 64]
            sims.append(cosine(invert_first_layer(weight, bias), x_all[i]))
        results[name] = {"median_cosine": float(np.median(sims)), "share_above_0.9": float(np.mean(np.array(sims) > 0.9))}
        print(name, results[name], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy-inversion.json").write_text(json.dumps(results, indent=1))


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def secagg_round(n: int, d: int, num_neighbours: int, threshold: int, drop: int = 0) -> dict:
    """One round of the protocol for n clients, every `drop`-th of whom (if > 0) drops out
    before sending its masked input; times and bytes."""
    from fedray.privacy.secagg.aggregate import SecureSum
    from fedray.privacy.secagg.client import ClientSession
    from fedray.privacy.secagg.messages import AdvertiseKeys, Params
    from fedray.privacy.secagg.server import ServerRound
    from fedray.privacy.secagg.sessions import encode
    from fedray.types import payload_bytes

    params = Params(threshold, num_neighbours, 32, 1.0)
    rng = np.random.default_rng(0)
    updates = {c: rng.normal(0, 0.05, d).astype(np.float32) for c in range(n)}
    client_s = {c: 0.0 for c in range(n)}
    sent = {c: 0 for c in range(n)}
    got = {c: 4 * d for c in range(n)}  # the global model, as in plain aggregation
    server_s = 0.0

    def timed_client(c, fn, *args):
        start = time.perf_counter()
        reply = fn(*args)
        client_s[c] += time.perf_counter() - start
        sent[c] += payload_bytes(reply)
        return reply

    sessions = {c: ClientSession(c, 1) for c in range(n)}
    start = time.perf_counter()
    server = ServerRound.start(1, params, range(n))
    server_s += time.perf_counter() - start
    keys = {c: timed_client(c, s.advertise, AdvertiseKeys(1)) for c, s in sessions.items()}
    start = time.perf_counter()
    requests = server.share_requests(keys)
    server_s += time.perf_counter() - start
    shared = {}
    for c, m in requests.items():
        got[c] += m.num_bytes
        shared[c] = timed_client(c, sessions[c].share, m)
    start = time.perf_counter()
    instructions = server.mask_instructions(shared)
    aggregator = SecureSum(d, params)
    aggregator.begin(server.num_levels)
    server_s += time.perf_counter() - start
    for c in range(n):
        got[c] += instructions[c].num_bytes
        masked = timed_client(c, lambda c=c: sessions[c].mask(
            encode(updates[c], 1, params, server.num_levels, rng), instructions[c]))
        if not drop or c % drop:
            start = time.perf_counter()
            aggregator.add(c, 1.0, masked)
            server_s += time.perf_counter() - start
    request = server.unmask_request(aggregator.clients)
    revealed = {}
    for u in request.survivors:
        got[u] += 4 * (len(request.survivors) + len(request.dropped))
        revealed[u] = timed_client(u, sessions[u].unmask, request)
    start = time.perf_counter()
    aggregator.unmask(server.correction(request, revealed, d + 1))
    mean = aggregator.result()[0]
    server_s += time.perf_counter() - start
    expected = np.mean([updates[c] for c in aggregator.clients], axis=0)
    assert np.abs(mean - expected).max() < 1e-6, "the protocol's mean is wrong"
    return {"client_ms": 1000 * statistics.median(client_s.values()), "server_ms": 1000 * server_s,
            "client_bytes_up": statistics.median(sent.values()), "client_bytes_down": statistics.median(got.values())}


def plain_round(n: int, d: int) -> dict:
    from fedray.strategy.aggregate import WeightedMean

    rng = np.random.default_rng(0)
    updates = [rng.normal(0, 0.05, d).astype(np.float32) for _ in range(n)]
    start = time.perf_counter()
    mean = WeightedMean(d)
    for c, u in enumerate(updates):
        mean.add(c, 1.0, u)
    mean.result()
    return {"client_ms": 0.0, "server_ms": 1000 * (time.perf_counter() - start),
            "client_bytes_up": 4 * d, "client_bytes_down": 4 * d}


def secagg(repeats: int, out: Path) -> None:
    d = 64 * 64 + 64 + 64 * 10 + 10
    results = {}
    cases = []
    for n in (10, 50, 100):
        k = min(n - 1 - (n - 1) % 2, 2 * math.ceil(math.log2(n)))
        cases.append((f"SecAgg+ n={n}, {k} neighbours, t={k // 2 + 1}", n, k, k // 2 + 1, 0))
    cases.append(("SecAgg+ n=100, every 10th drops before masking", 100, 14, 8, 10))
    cases.append(("SecAgg (complete graph) n=100", 100, 98, 50, 0))
    for name, n, k, t, drop in cases:
        runs = [secagg_round(n, d, k, t, drop) for _ in range(repeats)]
        results[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        plain = [plain_round(n, d) for _ in range(repeats)]
        results[f"plain n={n}"] = {key: statistics.median(r[key] for r in plain) for key in plain[0]}
        print(name, results[name], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy-secagg.json").write_text(json.dumps(results, indent=1))
    print(f"load: {os.getloadavg()}")
    print("| setting | client ms | server ms | client bytes up | client bytes down |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['client_ms']:.1f} | {r['server_ms']:.1f} | {r['client_bytes_up']:,.0f} | "
              f"{r['client_bytes_down']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "inversion", "secagg"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.what == "accuracy":
        accuracy(args.seeds, args.out)
    elif args.what == "inversion":
        inversion(args.out)
    else:
        secagg(args.repeats, args.out)


if __name__ == "__main__":
    main()
