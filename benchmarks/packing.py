"""What `data.instruct.packing` saves on examples/instruction_tuning's data: rows per
epoch and the share of real (non-PAD) tokens, padded vs packed, per client, with
SmolLM2's tokenizer and chat template; and the seconds of one local epoch of a small
llama (random weights, the example's vocabulary and seq_len) on client 0's shard, padded
vs packed, with its steps and mean training loss (not comparable: a packed epoch takes
fewer steps of the same `train.batch_size` rows; the parity test is where a packed batch's
loss is checked against the padded one's).

    python benchmarks/packing.py [key=value ...]

Results: benchmarks/results/packing.json and a Markdown table on stdout, with `uptime`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIG = REPO / "examples" / "instruction_tuning" / "config.yaml"
SMALL_LLAMA = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}


def epoch(task, shard, cfg, info) -> tuple[float, float, int]:
    """(seconds, mean loss, steps) of one local epoch of a fresh small llama."""
    import dataclasses

    import torch

    from fedray.client.train import train_local
    from fedray.config.schema import ModelConfig
    from fedray.models.build import build_model

    model = build_model(ModelConfig(name="hf_causal_lm", config=dict(SMALL_LLAMA)), info, seed=0)
    start = time.perf_counter()
    result = train_local(model, task, shard, dataclasses.replace(cfg.train, local_steps=None, local_epochs=1), seed=0)
    return time.perf_counter() - start, result.loss, result.steps


def main() -> None:
    import torch

    from fedray.config import load_config
    from fedray.data.arrow import matrix_values
    from fedray.data.packing import pack_rows
    from fedray.launcher import prepare
    from fedray.models.instruct_task import InstructLM

    torch.set_num_threads(1)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    prepared = prepare(load_config(CONFIG, [f"output_dir={REPO / 'runs'}", *sys.argv[1:]]))
    cfg, data = prepared.cfg, prepared.dataset
    clients = []
    for client in range(data.num_clients):
        ids = matrix_values(data.shard(client), "input_ids")
        mask = ids >= 0
        packed = pack_rows(ids, mask)
        clients.append({"client": client, "rows": len(ids), "packed_rows": len(packed.ids),
                        "real_share": float(mask.mean()), "packed_real_share": float((packed.ids >= 0).mean())})
    tokenizer = InstructLM.from_config(data.info, cfg).tokenizer
    shard = data.shard(0)
    timings = {}
    for name, packing in (("padded", False), ("packed", True)):
        task = InstructLM(tokenizer, packing=packing)
        seconds, loss, steps = epoch(task, task.prepare(shard, torch.device("cpu")), cfg, data.info)
        timings[name] = {"epoch_s": round(seconds, 2), "loss": round(loss, 4), "steps": steps}
    result = {"uptime": load, "seq_len": cfg.data.seq_len, "batch_size": cfg.train.batch_size,
              "clients": clients, "epoch_client0": timings}
    out = REPO / "benchmarks" / "results" / "packing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("| client | rows padded | rows packed | real tokens padded | real tokens packed |")
    print("|---|---:|---:|---:|---:|")
    for c in clients:
        print(f"| {c['client']} | {c['rows']} | {c['packed_rows']} | {c['real_share']:.1%} | {c['packed_real_share']:.1%} |")
    print(json.dumps(timings))
    print(f"uptime: {load}")


if __name__ == "__main__":
    main()
