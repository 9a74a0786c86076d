"""Model builders, looked up by `model.name` (`hf_causal_lm` lives in `fedray.models.hf`,
`cnn` in `fedray.models.cnn`, `grb_gnn` in `fedray.models.gnn`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from fedray.config.registry import Registry
from fedray.config.schema import ModelConfig
from fedray.data.datasets import DataInfo

if TYPE_CHECKING:
    import torch

MODELS: Registry[Callable[[ModelConfig, DataInfo], "torch.nn.Module"]] = Registry("model")


@MODELS.register("mlp")
def mlp(cfg: ModelConfig, info: DataInfo) -> "torch.nn.Module":
    """Fully connected ReLU network from `num_features` to `num_classes` logits."""
    from torch import nn

    if info.task == "graph_classification":
        raise ValueError("model.name=mlp reads pixel rows, but data.granular turns images into "
                         "granular-ball graphs: use model.name=grb_gnn, or drop data.granular")
    widths = [info.num_features, *cfg.hidden]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], info.num_classes))
    return nn.Sequential(*layers)


def build_model(cfg: ModelConfig, info: DataInfo, seed: int) -> "torch.nn.Module":
    """Build with a fixed seed so every process that builds it gets the same initial weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS.build(cfg.name, cfg, info)
