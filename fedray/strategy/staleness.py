"""Staleness weights for asynchronous aggregation: s(tau) for an update trained on a
model `tau` updates older than the one it is applied to (s(0) = 1, non-increasing).

FedBuff (Nguyen et al., AISTATS 2022) uses 1/sqrt(1 + tau); FedAsync (Xie et al.,
2019) studies the polynomial family (1 + tau)^-a.
"""

from __future__ import annotations

from typing import Callable

from fedray.config.registry import Registry
from fedray.config.schema import ServerConfig

StalenessWeight = Callable[[int], float]
STALENESS: Registry[Callable[[ServerConfig], StalenessWeight]] = Registry("staleness weighting")


@STALENESS.register("inverse_sqrt")
def inverse_sqrt(cfg: ServerConfig) -> StalenessWeight:
    """1 / sqrt(1 + tau), FedBuff's choice."""
    return lambda tau: (1.0 + tau) ** -0.5


@STALENESS.register("polynomial")
def polynomial(cfg: ServerConfig) -> StalenessWeight:
    """(1 + tau)^-a with a = `server.staleness_exponent`."""
    exponent = cfg.staleness_exponent
    return lambda tau: (1.0 + tau) ** -exponent


@STALENESS.register("constant")
def constant(cfg: ServerConfig) -> StalenessWeight:
    """1: stale updates count fully (plain asynchronous FedAvg)."""
    return lambda tau: 1.0
