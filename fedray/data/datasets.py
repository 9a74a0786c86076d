"""Bundled datasets that need no download, and what a model needs to know about them.

A dataset builder returns either an `ArrayDataset` (labelled feature rows) or a
`fedray.data.text.TextCorpus` (raw documents per owner, tokenised later with the
run's tokenizer). Both kinds end up offering `groups`, `table(rows)` and `info`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np
import pyarrow as pa

from fedray.config.registry import Registry
from fedray.config.schema import DataConfig
from fedray.data.arrow import features_table


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a model builder needs to know about the data."""

    task: str
    """Name of the task in `fedray.models.tasks.TASKS` (loss and metrics)."""
    num_features: int
    num_classes: int
    vocab_size: int = 0
    """Token ids a language model must embed (text datasets; 0 otherwise)."""
    seq_len: int = 0
    """Tokens per training row (text datasets; 0 otherwise)."""
    image_shape: tuple[int, ...] = ()
    """(height, width) of image datasets, whose rows are row-major pixels; () otherwise."""


class ArrayDataset(NamedTuple):
    """Examples of a classification task before splitting."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    image_shape: tuple[int, ...] = ()
    """(height, width) when each row of `x` is a row-major image with pixels in [0, 1]."""
    test_mask: np.ndarray | None = None
    """True for the rows of a dataset's own test split (e.g. MNIST's t10k files),
    which then replaces the stratified held-out split."""

    @property
    def groups(self) -> np.ndarray:
        """What the held-out split stratifies on: the class."""
        return self.y

    @property
    def owner_names(self) -> tuple[str, ...]:
        return ()

    @property
    def info(self) -> DataInfo:
        return DataInfo("classification", self.x.shape[1], self.num_classes, image_shape=self.image_shape)

    def table(self, rows: np.ndarray) -> pa.Table:
        return features_table(self.x[rows], self.y[rows])


DATASETS: Registry[Callable[[DataConfig], Any]] = Registry("dataset")


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 handwritten digits (bundled with the package).

    Pixels are 0..16; they are scaled to [0, 1].
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return ArrayDataset(x, bunch.target.astype(np.int64), 10, image_shape=(8, 8))
