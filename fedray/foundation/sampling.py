"""Sampling text from a causal LM in lockstep with the other ZeRO ranks.

Under ZeRO-3 every forward pass gathers parameters collectively, so all ranks
must run the same number of forward passes. Each rank samples its own rows, but
the rows come in jobs that every rank shares in count: one job per prompt, the
same number of rows on every rank, the same number of new tokens. Sampling is
nucleus (top-p) sampling by inverse CDF with one uniform draw per row and step
from a generator seeded by (seed, row): a row's text depends on the seed and the
model, not on which rank drew it or which rows shared its batch.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np


def uniforms(seed: int, rows: np.ndarray, steps: int) -> np.ndarray:
    """float64 [len(rows), steps]: row r's draws come from a generator seeded (seed, r)."""
    return np.stack([np.random.default_rng([seed, int(r)]).random(steps) for r in rows]) if len(rows) \
        else np.zeros((0, steps))


def nucleus_sample(logits: Any, draws: Any, temperature: float, top_p: float) -> Any:
    """Token ids [B] from logits [B, V]: keep the most likely tokens until their mass
    reaches `top_p` (always at least one), renormalise, invert the CDF at `draws` [B]."""
    import torch

    probs = torch.softmax(logits.double() / temperature, dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p
    sorted_p = sorted_p * (before < top_p)
    cdf = torch.cumsum(sorted_p, dim=-1)
    cdf = cdf / cdf[:, -1:]
    pick = torch.searchsorted(cdf.contiguous(), draws.to(cdf).unsqueeze(-1).contiguous(), right=True)
    pick = pick.clamp_max(cdf.shape[-1] - 1)
    return order.gather(-1, pick).squeeze(-1)


def sample_rows(model: Any, prefix: np.ndarray, rows: np.ndarray, seq_len: int, temperature: float,
                top_p: float, seed: int, device: Any) -> np.ndarray:
    """int32 [len(rows), seq_len]: `prefix` continued by sampling to `seq_len` tokens,
    with a key-value cache; exactly `seq_len - len(prefix)` forward passes."""
    import torch

    steps = seq_len - len(prefix)
    assert steps >= 1, "the prefix leaves no token to sample"
    draws = torch.as_tensor(uniforms(seed, rows, steps), device=device)
    ids = torch.tensor(np.asarray(prefix), dtype=torch.long, device=device).repeat(len(rows), 1)
    cache_arg = _cache_argument(model)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        for step in range(steps):
            token = nucleus_sample(out.logits[:, -1].float(), draws[:, step], temperature, top_p)
            ids = torch.cat([ids, token.unsqueeze(-1)], dim=-1)
            if step + 1 < steps:
                cache = getattr(out, "cache", None) or out.past_key_values
                out = model(input_ids=token.unsqueeze(-1), use_cache=True, logits_to_keep=1,
                            **{cache_arg: cache})
    return ids.to("cpu").numpy().astype(np.int32)


def _cache_argument(model: Any) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); take whichever the model has."""
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
