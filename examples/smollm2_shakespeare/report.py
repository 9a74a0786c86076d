"""Held-out perplexity per role, before (the base model) and after federated LoRA.

    python examples/smollm2_shakespeare/report.py runs/smollm2_shakespeare

Rebuilds the run's data split from its config (same seed, same held-out rows),
scores every role's held-out rows with the base model and with the global model
of the run's newest checkpoint, and prints one line per role.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

from fedray.data.arrow import token_arrays
from fedray.launcher import prepare
from fedray.models.build import build_model
from fedray.models.tasks import CausalLM
from fedray.server.export import global_model, load_lora_run


def perplexity_by_role(model, ids: torch.Tensor, owner, names) -> dict[str, tuple[int, float]]:
    """role -> (held-out target tokens, perplexity)."""
    nll, _, count = CausalLM().row_scores(model.eval(), ids, batch_size=16)
    out = {}
    for index, name in enumerate(names):
        rows = torch.from_numpy(owner == index)
        tokens = int(count[rows].sum())
        out[name] = (tokens, math.exp(float(nll[rows].sum()) / max(1, tokens)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args()

    cfg, state = load_lora_run(args.run_dir)
    dataset = prepare(cfg).dataset
    ids, owner = token_arrays(dataset.test)
    ids = torch.tensor(ids, dtype=torch.long)
    base = build_model(dataclasses.replace(cfg.model, peft=None), dataset.info, cfg.seed)
    before = perplexity_by_role(base, ids, owner, dataset.owner_names)
    after = perplexity_by_role(global_model(cfg, state, dataset.info), ids, owner, dataset.owner_names)

    print(f"{'role':<36} {'tokens':>7} {'before':>8} {'after':>8}   (round {state.server_round})")
    for name in dataset.owner_names:
        tokens, ppl_before = before[name]
        print(f"{name:<36} {tokens:>7} {ppl_before:>8.2f} {after[name][1]:>8.2f}")


if __name__ == "__main__":
    main()
