"""Greedy decoding for evaluation and `fedray generate`: batched, left-padded, KV cache."""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch


@torch.no_grad()
def greedy_generate(model: torch.nn.Module, prompts: Sequence[np.ndarray], max_new_tokens: int,
                    eos_id: int, batch_size: int = 16, pad_id: int = 0) -> list[np.ndarray]:
    """The greedily generated ids after each prompt, up to and excluding the end token.

    Prompts of a batch are left-padded (attention 0 there, positions counted from
    each prompt's first real token), so every row's next token comes from its last
    real one; the cache holds the keys and values of what is already read.
    """
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt):] = 1
        out += _decode(model, ids.to(device), attention.to(device), max_new_tokens, eos_id)
    return out


def _decode(model, ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int, eos_id: int) -> list[np.ndarray]:
    """One batch: feed the prompts once, then one token per step through the cache."""
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    generated, cache, step_ids = [], None, ids
    positions = (attention.cumsum(1) - 1).clamp_min(0)
    last_only = {"logits_to_keep": 1} if _can_keep_last_logits(model) else {}
    for _ in range(max_new_tokens):
        step_positions = positions if cache is None else positions[:, -1:]
        result = model(input_ids=step_ids, attention_mask=attention, position_ids=step_positions,
                       cache=cache, use_cache=True, **last_only)
        cache = result.cache
        token = result.logits[:, -1].argmax(-1)
        token = torch.where(done, torch.full_like(token, eos_id), token)
        generated.append(token)
        done |= token == eos_id
        if bool(done.all()):
            break
        step_ids = token[:, None]
        attention = torch.cat([attention, torch.ones_like(step_ids)], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    tokens = torch.stack(generated, dim=1).cpu().numpy()
    return [row[: int(np.argmax(row == eos_id))] if (row == eos_id).any() else row for row in tokens]


def _can_keep_last_logits(model) -> bool:
    """Whether the model (under a PEFT wrapper or not) takes `logits_to_keep`: then the
    prompt's pass computes the vocabulary projection for the last position only, not
    for every prompt token (a fifth of a small model's prefill, and a
    [batch, prompt, vocab] tensor)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False
