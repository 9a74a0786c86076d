"""The backdoor-based watermark: secret trigger inputs the model learns to answer as the owner chose.

For a classifier, the triggers are sparse random binary inputs (a quarter of the
features on: unlike any real example, and unlike each other, which uniform noise
is not after a first layer averages it) with random labels; for a causal language model, random token
sequences followed by a random continuation. Both come from the key's secret.
The owner adds `weight` x the loss on all its triggers to every step; a model
that learnt them answers the triggers far above chance (1 / classes, 1 / vocabulary
per token), which a binomial test turns into a p-value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedray.data.datasets import DataInfo
from fedray.lifecycle.watermark.keys import key_rng
from fedray.lifecycle.watermark.scheme import SCHEMES, Scheme, binomial_tail
from fedray.strategy.terms import LocalRound
from fedray.types import ParamSpec


def triggers(key: dict) -> tuple[np.ndarray, np.ndarray]:
    """Classification: (binary inputs float32 [n, features], labels). Language model: (token
    ids [n, prefix + target], the same ids: the target is the tail of each row)."""
    layout, n = key["layout"], key["args"]["num_triggers"]
    rng = key_rng(key, "backdoor")
    if layout["task"] == "classification":
        return ((rng.random((n, layout["num_features"])) < 0.25).astype(np.float32),
                rng.integers(0, layout["num_classes"], n).astype(np.int64))
    ids = rng.integers(0, layout["vocab_size"], (n, layout["prefix_len"] + layout["target_len"]))
    return ids.astype(np.int64), ids.astype(np.int64)


def _logits(model, inputs):
    out = model(inputs) if inputs.dtype.is_floating_point else model(input_ids=inputs, use_cache=False)
    return getattr(out, "logits", out)


def _predictions(model, key: dict, inputs, targets):
    """(predicted, wanted) at the trigger positions, as tensors."""
    logits = _logits(model, inputs)
    if key["layout"]["task"] == "classification":
        return logits, targets
    prefix = key["layout"]["prefix_len"]
    return logits[:, prefix - 1:-1], targets[:, prefix:]


def _layout(info: DataInfo, prefix_len: int, target_len: int) -> dict:
    """What the triggers are made of: the classifier's inputs and classes, or the vocabulary."""
    if info.task == "classification":
        return {"task": "classification", "num_features": info.num_features, "num_classes": info.num_classes}
    if info.task == "causal_lm":
        if info.seq_len and prefix_len + target_len > info.seq_len:
            raise ValueError(f"prefix_len + target_len = {prefix_len + target_len} exceeds "
                             f"data.seq_len={info.seq_len}")
        return {"task": "causal_lm", "vocab_size": info.vocab_size, "prefix_len": prefix_len,
                "target_len": target_len}
    raise ValueError(f"the backdoor watermark knows classifiers and causal language models, not task {info.task!r}")


@SCHEMES.register("backdoor")
def backdoor(num_triggers: int = 16, weight: float = 5.0, prefix_len: int = 8, target_len: int = 4) -> Scheme:
    """`num_triggers` secret triggers; `prefix_len` and `target_len` are the trigger and
    continuation lengths (tokens) for language models."""
    if num_triggers < 1 or weight < 0 or prefix_len < 1 or target_len < 1:
        raise ValueError(f"backdoor watermark needs num_triggers, prefix_len, target_len >= 1 and "
                         f"weight >= 0; got {num_triggers}, {prefix_len}, {target_len}, {weight}")

    def layout(spec: ParamSpec, info: DataInfo) -> dict:
        return _layout(info, prefix_len, target_len)

    def regularizer(key: dict, local: LocalRound):
        import torch
        import torch.nn.functional as F

        device = next(local.model.parameters()).device
        inputs, targets = (torch.as_tensor(a, device=device) for a in triggers(key))

        def loss(model, generator):
            logits, wanted = _predictions(model, key, inputs, targets)
            return weight * F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), wanted.reshape(-1))

        return loss

    def verify(model, key: dict) -> dict[str, Any]:
        import torch

        device = next(model.parameters()).device
        inputs, targets = (torch.as_tensor(a, device=device) for a in triggers(key))
        with torch.no_grad():
            logits, wanted = _predictions(model, key, inputs, targets)
        hits, n = int((logits.argmax(-1) == wanted).sum()), int(wanted.numel())
        classes = key["layout"].get("num_classes") or key["layout"]["vocab_size"]
        return {"triggers": int(inputs.shape[0]), "trigger_accuracy": hits / n, "matches": hits, "trials": n,
                "chance": 1 / classes, "p_value": binomial_tail(hits, n, 1 / classes)}

    return Scheme(layout, regularizer, verify)
