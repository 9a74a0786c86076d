"""What a client's training step and the server's evaluation cost on examples/instruction_tuning,
with and without the two savings of the instruct path: columns of padding alone cut from
each batch (`fedray.models.tasks.trim_right_padding`) and the prompt pass projecting only
its last position onto the vocabulary (`logits_to_keep`, `fedray.models.generate`).

    python benchmarks/instruct_speed.py [--repeats 5] [--threads 1]

SmolLM2-135M-Instruct (the bundled GGUF, float32) with the example's LoRA adapters, in
this process on `--threads` CPU threads (a client actor with num_cpus 1 gets one):
- a training step (forward and backward, 8 rows of the example's data) on rows padded
  to data.seq_len (160), as before the cut, and on the same rows cut;
- greedy answers to 32 held-out prompts (16 new tokens at most, batches of 32) with the
  vocabulary projected at every prompt position, and at the last one only;
- the held-out loss over 64 rows, padded and cut.
Median seconds of `--repeats` runs each, variants interleaved so that a change in the
machine's load hits both; peak RSS of the process at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIG = REPO / "examples" / "instruction_tuning" / "config.yaml"


class _AllLogits(torch.nn.Module):
    """The model as generation saw it before: no `logits_to_keep` in its signature."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask, position_ids, cache=None, use_cache=True):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          cache=cache, use_cache=use_cache)


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import numpy as np

    import fedray.models.hf  # noqa: F401 - registers the `model` tokenizer
    from fedray.config import load_config
    from fedray.data.plan import DataSource
    from fedray.models.build import MODELS
    from fedray.models.generate import greedy_generate
    from fedray.models.instruct_task import InstructLM
    from fedray.models.tasks import masked_row_scores

    cfg = load_config(CONFIG, [])
    data = DataSource(cfg.data, cfg.model, cfg.clients.num_clients, cfg.seed).load()
    task = InstructLM.from_config(data.info, cfg)
    prepared = task.prepare(data.table(np.arange(len(data.ids))), torch.device("cpu"))
    model = MODELS.build(cfg.model.name, cfg.model, data.info)
    rows = torch.randperm(len(prepared.ids), generator=torch.Generator().manual_seed(0))
    train_ids, train_mask = prepared.ids[rows[:8]], prepared.loss_mask[rows[:8]]
    held_ids, held_mask = prepared.ids[rows[8:72]], prepared.loss_mask[rows[8:72]]
    prompts = [prepared.prompts[int(i)] for i in rows[72:104]]
    eos = task.tokenizer.eos_id

    def step(cut: bool):
        model.zero_grad(set_to_none=True)
        if cut:
            from fedray.models.tasks import masked_lm_loss

            loss = masked_lm_loss(model, train_ids, train_mask)
        else:  # the padded rows as they were computed before the cut
            labels = train_ids.masked_fill(~train_mask, -100)
            loss = model(input_ids=train_ids.clamp_min(0), attention_mask=train_ids >= 0, labels=labels,
                         use_cache=False).loss
        loss.backward()

    @torch.no_grad()
    def held_out(cut: bool):
        if cut:
            return masked_row_scores(model, held_ids, held_mask, 16)
        for start in range(0, len(held_ids), 16):
            ids = held_ids[start:start + 16]
            model(input_ids=ids.clamp_min(0), attention_mask=ids >= 0, use_cache=False).logits[:, :-1].float()

    plain = _AllLogits(model)
    answers = {}

    def generate(last_only: bool):
        answers[last_only] = greedy_generate(model if last_only else plain, prompts, cfg.data.instruct.max_new_tokens,
                                             eos, batch_size=32)

    model.train()
    variants = {"train step, padded": lambda: step(False), "train step, cut": lambda: step(True)}
    results = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            results[name].append(_median_s(fn, 1))
    model.eval()
    evals = {"held-out loss, padded": lambda: held_out(False), "held-out loss, cut": lambda: held_out(True),
             "32 answers, all logits": lambda: generate(False), "32 answers, last logits": lambda: generate(True)}
    results.update({name: [] for name in evals})
    for _ in range(args.repeats):
        for name, fn in evals.items():
            results[name].append(_median_s(fn, 1))
    same = all(a.tolist() == b.tolist() for a, b in zip(answers[False], answers[True]))
    width = int((train_ids >= 0).sum(1).max())
    out = {"repeats": args.repeats, "threads": args.threads, "train_rows_longest": width, "seq_len": cfg.data.seq_len,
           "median_s": {k: round(statistics.median(v), 3) for k, v in results.items()},
           "same_answers": same, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(out, indent=2))
    dest = REPO / "benchmarks" / "results" / "instruct_speed.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
