"""A small pixel CNN for image datasets: the pixel baseline GrBFL is compared with."""

from __future__ import annotations

import torch
from torch import nn

from fedray.config.schema import ModelConfig
from fedray.data.datasets import DataInfo


class PixelCNN(nn.Module):
    """3x3 convolutions (each ReLU then 2x2 max-pooling) and a linear head; takes the
    flat row-major pixel rows the image datasets store."""

    def __init__(self, image_shape: tuple[int, int], channels: list[int], num_classes: int):
        super().__init__()
        self.image_shape = image_shape
        layers: list[nn.Module] = []
        height, width = image_shape
        for fan_in, fan_out in zip([1, *channels[:-1]], channels):
            layers += [nn.Conv2d(fan_in, fan_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            height, width = -(-height // 2), -(-width // 2)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * height * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(x.shape[0], 1, *self.image_shape)
        return self.head(self.features(images).flatten(1))


def cnn(cfg: ModelConfig, info: DataInfo) -> nn.Module:
    """`model.hidden` are the channels of its convolutions (e.g. [16, 32])."""
    if info.task != "classification" or len(info.image_shape) != 2:
        raise ValueError("model.name=cnn needs pixel images (data.dataset mnist5k, idx or digits, "
                         "without data.granular)")
    if not cfg.hidden:
        raise ValueError("model.hidden must list at least one channel count for cnn")
    return PixelCNN(info.image_shape, list(cfg.hidden), info.num_classes)
