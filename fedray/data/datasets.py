"""Bundled datasets that need no download, returned as (x, y) arrays."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import DataConfig


class ArrayDataset(NamedTuple):
    """Examples of a classification task before splitting."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int


DATASETS: Registry[Callable[[DataConfig], ArrayDataset]] = Registry("dataset")


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 handwritten digits (bundled with the package).

    Pixels are 0..16; they are scaled to [0, 1].
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return ArrayDataset(x, bunch.target.astype(np.int64), 10)
