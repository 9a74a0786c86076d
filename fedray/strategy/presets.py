"""Named server strategies, each a function that builds an UpdateTransform chain.

The aggregated (weighted-mean) client delta goes through the chain and the
result is added to the global weights. FedAvg is the identity.
"""

from __future__ import annotations

from typing import Callable

from fedray.config.registry import Registry
from fedray.config.schema import StrategyConfig
from fedray.transforms import UpdateTransform, adam, chain, identity, momentum, scale

STRATEGIES: Registry[Callable[[StrategyConfig], UpdateTransform]] = Registry("strategy")


@STRATEGIES.register("fedavg")
def fedavg(cfg: StrategyConfig) -> UpdateTransform:
    """McMahan et al. 2017: the new model is the example-weighted mean of the clients'."""
    return identity()


@STRATEGIES.register("fedavgm")
def fedavgm(cfg: StrategyConfig) -> UpdateTransform:
    """Server momentum on the mean delta (Hsu et al. 2019)."""
    return chain(momentum(cfg.momentum), scale(cfg.server_lr))


@STRATEGIES.register("fedadam")
def fedadam(cfg: StrategyConfig) -> UpdateTransform:
    """Server Adam on the mean delta (Reddi et al. 2021)."""
    return adam(cfg.server_lr, cfg.beta1, cfg.beta2, cfg.eps)
