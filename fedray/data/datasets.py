"""Bundled datasets that need no download, and what a model needs to know about them.

A dataset builder returns either an `ArrayDataset` (labelled feature rows) or a
`fedray.data.text.TextCorpus` (raw documents per owner, tokenised later with the
run's tokenizer). Both kinds end up offering `groups`, `table(rows)` and `info`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

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
    owner: np.ndarray | None = None
    """Who holds each example, for data generated per client (`natural` partitioning
    then gives client c owner c's rows); None: nobody in particular."""

    @property
    def groups(self) -> np.ndarray:
        """What the held-out split stratifies on: the owner if there is one, else the class."""
        return self.y if self.owner is None else self.owner

    @property
    def owner_names(self) -> tuple[str, ...]:
        return ()

    @property
    def info(self) -> DataInfo:
        return DataInfo("classification", self.x.shape[1], self.num_classes, image_shape=self.image_shape)

    def table(self, rows: np.ndarray) -> pa.Table:
        return features_table(self.x[rows], self.y[rows])

    def index(self) -> "DataIndex":
        return DataIndex(self.groups, self.info, self.test_mask, columns={"y": self.y})


class DataIndex(NamedTuple):
    """What planning a federated split needs of a dataset, and nothing more: each row's
    group (class or owner), the dataset's own test rows, the model's view of the data,
    and the columns a data schedule filters on. No features, no token ids."""

    groups: np.ndarray
    info: DataInfo
    test_mask: np.ndarray | None = None
    owner_names: tuple[str, ...] = ()
    columns: dict[str, np.ndarray] = {}
    """`y` (labels) or `owner` per row, for checking a data schedule's tasks."""
    notes: tuple[str, ...] = ()
    """What loading cut or dropped (instruction rows), said once at start."""


@runtime_checkable
class PerClientData(Protocol):
    """A dataset generated for a number of clients, each with data of its own (a builder
    may return one: the federated view asks it for the run's clients)."""

    def for_clients(self, num_clients: int, seed: int) -> ArrayDataset:
        """Every client's examples, with `owner` set to its client id."""


DATASETS: Registry[Callable[[DataConfig], Any]] = Registry("dataset")

DATASET_INDEXES: Registry[Callable[[DataConfig, int, int], DataIndex]] = Registry("dataset index")
"""`data.dataset` -> `builder(cfg, num_clients, seed)` of its `DataIndex` read without its
features (labels only), for the driver; a dataset without one is loaded and indexed."""


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 handwritten digits (bundled with the package).

    Pixels are 0..16; they are scaled to [0, 1]. Read straight from the CSV that
    `sklearn.datasets.load_digits` reads (same rows, same order), so the driver
    does not pay for importing scikit-learn and SciPy.
    """
    data = _read_digits_csv()
    x = (data[:, :-1] / 16.0).astype(np.float32)
    return ArrayDataset(x, data[:, -1].astype(np.int64), 10, image_shape=(8, 8))


@DATASET_INDEXES.register("digits")
def digits_index(cfg: DataConfig, num_clients: int, seed: int) -> DataIndex:
    """digits' labels only (the CSV's last column), as `digits` reads them."""
    labels = _read_digits_csv(last_column_only=True)[:, -1].astype(np.int64)
    return DataIndex(labels, DataInfo("classification", 64, 10, image_shape=(8, 8)), columns={"y": labels})


def _read_digits_csv(last_column_only: bool = False) -> np.ndarray:
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("data.dataset=digits needs scikit-learn installed (it ships the data)")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    return read_csv_matrix(path, last_column_only).astype(np.float64)


def read_csv_matrix(path, last_column_only: bool = False) -> np.ndarray:
    """A gzipped headerless numeric CSV as a matrix (columns in file order), or only its
    last column (the label) as a one-column matrix: the other columns are not converted."""
    import gzip

    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(autogenerate_column_names=True)
    convert = None
    if last_column_only:
        with gzip.open(path, "rb") as fh:
            width = fh.readline().count(b",") + 1
        convert = pacsv.ConvertOptions(include_columns=[f"f{width - 1}"])
    table = pacsv.read_csv(pa.input_stream(str(path), compression="gzip"), read_options=read, convert_options=convert)
    return np.column_stack([column.to_numpy() for column in table.columns])
