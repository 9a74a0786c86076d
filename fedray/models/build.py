"""Model builders, looked up by `model.name` (`hf_causal_lm` lives in `fedray.models.hf`,
`cnn` in `fedray.models.cnn`, `grb_gnn` in `fedray.models.gnn`, `grb_gat` in
`fedray.models.gat`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from fedray.config.registry import Registry
from fedray.config.schema import ModelConfig
from fedray.data.datasets import DataInfo

if TYPE_CHECKING:
    import torch

MODELS: Registry[Callable[[ModelConfig, DataInfo], "torch.nn.Module"]] = Registry("model")

PARAM_COUNTS: dict[str, Callable[[ModelConfig, DataInfo], int]] = {}
"""Trainable-parameter counts of builders whose size follows from the config alone, so
the driver can check and start a run without importing torch (others are built on
torch's meta device)."""


def count_params(cfg: ModelConfig, info: DataInfo) -> int | None:
    """The model's trainable parameters if its builder can tell without torch (no LoRA)."""
    counter = PARAM_COUNTS.get(cfg.name)
    return None if counter is None or cfg.peft is not None else counter(cfg, info)


@MODELS.register("mlp")
def mlp(cfg: ModelConfig, info: DataInfo) -> "torch.nn.Module":
    """Fully connected ReLU network from `num_features` to `num_classes` logits."""
    from torch import nn

    _check_rows(info)
    widths = [info.num_features, *cfg.hidden]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], info.num_classes))
    return nn.Sequential(*layers)


def _check_rows(info: DataInfo) -> None:
    if info.task == "graph_classification":
        raise ValueError("model.name=mlp reads pixel rows, but data.granular turns images into "
                         "granular-ball graphs: use model.name=grb_gnn or grb_gat, or drop data.granular")


def _mlp_params(cfg: ModelConfig, info: DataInfo) -> int:
    _check_rows(info)
    widths = [info.num_features, *cfg.hidden, info.num_classes]
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:]))


PARAM_COUNTS["mlp"] = _mlp_params
# Builders whose modules import torch at the top, imported when a run builds them.
MODELS.register_lazy("cnn", "fedray.models.cnn:cnn")
MODELS.register_lazy("grb_gnn", "fedray.models.gnn:grb_gnn")
MODELS.register_lazy("grb_gat", "fedray.models.gat:grb_gat")


def build_model(cfg: ModelConfig, info: DataInfo, seed: int) -> "torch.nn.Module":
    """Build with a fixed seed so every process that builds it gets the same initial weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS.build(cfg.name, cfg, info)
