"""The feature-based watermark: signs of secret projections of selected parameters (FedIPR).

In the spirit of FedIPR (Li et al., TPAMI 2022): an owner's key defines a secret
projection X (num_bits x n, Gaussian) of n selected parameters theta (LoRA A/B,
normalisation scales, a classifier layer) and a secret bit string b. While
training, the owner adds a hinge loss pushing every sign(X theta)_j towards b_j
with a margin, so the bits survive later changes to the weights (fine-tuning,
pruning, quantisation). The margin is measured in units of the selected
parameters' root-mean-square, so it means the same at any weight scale. Anyone
with the key extracts sign(X theta) and counts bit errors; a model trained
without the key matches about half the bits.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from fedray.data.datasets import DataInfo
from fedray.lifecycle.watermark.keys import key_rng
from fedray.lifecycle.watermark.scheme import SCHEMES, Scheme, binomial_tail
from fedray.strategy.terms import LocalRound
from fedray.types import ParamSpec


def projection(key: dict) -> tuple[np.ndarray, np.ndarray]:
    """(X, b): the key's projection (float32, rows of norm about 1) and bits (0/1)."""
    size = sum(math.prod(shape) for _, shape in key["layout"]["params"])
    rng = key_rng(key, "feature")
    bits = rng.integers(0, 2, key["args"]["num_bits"]).astype(np.int64)
    x = rng.standard_normal((key["args"]["num_bits"], size), dtype=np.float32) / np.float32(math.sqrt(size))
    return x, bits


def selected(named: dict, key: dict) -> list:
    """The key's parameters of a model, in key order; ValueError naming any it lacks."""
    missing = [n for n, _ in key["layout"]["params"] if n not in named]
    if missing:
        raise ValueError(f"the model has no parameter(s) {missing[:3]} that the key's watermark is in "
                         f"(was the key made for another model?)")
    wrong = [n for n, shape in key["layout"]["params"] if tuple(named[n].shape) != tuple(shape)]
    if wrong:
        raise ValueError(f"parameter(s) {wrong[:3]} have another shape than the key's model")
    return [named[n] for n, _ in key["layout"]["params"]]


def extract(model, key: dict) -> np.ndarray:
    """The bits a model carries under this key: 1 where (X theta)_j > 0."""
    import torch

    with torch.no_grad():
        theta = torch.cat([p.detach().reshape(-1).float().cpu() for p in selected(dict(model.named_parameters()), key)])
    x, _ = projection(key)
    return (x @ theta.numpy() > 0).astype(np.int64)


def _select(spec: ParamSpec, pattern: re.Pattern, num_bits: int) -> list:
    """[name, shape] of the parameters whose names match; ValueError if they cannot hold the bits."""
    chosen = [[n, list(s)] for n, s in zip(spec.names, spec.shapes) if pattern.search(n)]
    if not chosen:
        raise ValueError(f"params='{pattern.pattern}' matches none of the model's trainable parameters "
                         f"{list(spec.names)[:6]}")
    size = sum(math.prod(s) for _, s in chosen)
    if num_bits > size:
        raise ValueError(f"num_bits={num_bits} is larger than the {size} parameters selected by "
                         f"params='{pattern.pattern}'; select more parameters or embed fewer bits")
    return chosen


@SCHEMES.register("feature")
def feature(num_bits: int = 64, params: str = ".*", margin: float = 2.0, weight: float = 2.0) -> Scheme:
    """`num_bits` bits in the parameters whose names match the regular expression
    `params` (e.g. `lora_` for LoRA A/B, `norm` for normalisation scales), each pushed
    past `margin` x RMS(theta) on its side; the hinge losses are summed over the bits
    (each violated bit pulls as hard however many there are) and weighted by `weight`.
    Too large a weight makes an owner's update stand out: past
    `server.validation.max_norm_ratio` the server rejects it, and nothing is embedded."""
    if num_bits < 1 or margin < 0 or weight < 0:
        raise ValueError(f"feature watermark needs num_bits >= 1, margin >= 0, weight >= 0; got "
                         f"num_bits={num_bits}, margin={margin}, weight={weight}")
    try:
        pattern = re.compile(params)
    except re.error as err:
        raise ValueError(f"params='{params}' is not a regular expression: {err}") from None

    def layout(spec: ParamSpec, info: DataInfo) -> dict:
        return {"params": _select(spec, pattern, num_bits)}

    def regularizer(key: dict, local: LocalRound):
        import torch

        named = dict(local.model.named_parameters())
        device = selected(named, key)[0].device
        x, bits = projection(key)
        x_t = torch.as_tensor(x, device=device)
        signs = torch.as_tensor(2.0 * bits - 1.0, dtype=torch.float32, device=device)

        def hinge(model, generator):
            theta = torch.cat([p.reshape(-1).float() for p in selected(named, key)])
            scale = theta.detach().pow(2).mean().sqrt()
            return weight * torch.relu(margin * scale - signs * (x_t @ theta)).sum()

        return hinge

    def verify(model, key: dict) -> dict[str, Any]:
        _, bits = projection(key)
        errors = int((extract(model, key) != bits).sum())
        n = len(bits)
        return {"bits": n, "bit_errors": errors, "ber": errors / n, "matches": n - errors, "trials": n,
                "chance": 0.5, "p_value": binomial_tail(n - errors, n, 0.5)}

    return Scheme(layout, regularizer, verify, same_layout=True)
