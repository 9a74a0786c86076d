"""A server strategy of your own, built from fedray's update transforms.

Clip the aggregated update to a maximum norm, then apply server momentum: a
robust variant of FedAvgM. fedray finds it through the dotted path in
config.yaml, `examples.custom_strategy.strategy:clipped_fedavgm`; no change to
fedray itself.
"""

from fedray.config.schema import StrategyConfig
from fedray.transforms import UpdateTransform, chain, clip_by_global_norm, momentum, scale

MAX_NORM = 1.0


def clipped_fedavgm(cfg: StrategyConfig) -> UpdateTransform:
    return chain(clip_by_global_norm(MAX_NORM), momentum(cfg.momentum), scale(cfg.server_lr))
