"""What a watermarking scheme is, the registry of them, and the statistics of a verification."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from fedray.config.registry import Registry
from fedray.data.datasets import DataInfo
from fedray.strategy.terms import LocalRound, Regularizer
from fedray.types import ParamSpec

if TYPE_CHECKING:
    import torch


class Scheme(NamedTuple):
    """A watermark: how an owner's key fits a model, how the owner embeds it while
    training, and how anyone holding the key checks a model for it.

    `layout(spec, info) -> dict`: what the key must record about the model (JSON
    data, e.g. the parameters that carry the bits); ValueError if the scheme cannot
    fit this model (more bits than selected parameters).
    `regularizer(key, local) -> regularizer(model, generator)`: the owner's extra loss.
    `verify(model, key) -> {name: value}`: the evidence, with a `p_value` (the chance
    that a model without this watermark scores as well) and `matches`/`trials`.
    """

    layout: Callable[[ParamSpec, DataInfo], dict]
    regularizer: Callable[[dict, LocalRound], Regularizer]
    verify: Callable[["torch.nn.Module", dict], dict[str, Any]]
    same_layout: bool = False
    """It reads parameters by name, so every client must train the same adapter (no
    mixed LoRA ranks, no stacking)."""


SCHEMES: Registry[Callable[..., Scheme]] = Registry("watermark scheme", returns=Scheme)
"""`factory(**args) -> Scheme`, for `server.watermark.name`."""


def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P[X >= successes] for X ~ Binomial(trials, p): the one-sided p-value of scoring
    at least this well by chance (exact, summed in log space)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p
             + (trials - k) * log_q for k in range(successes, trials + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))
