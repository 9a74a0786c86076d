"""Granular-ball segmentation: an exact cover, every ball within its constraints, determinism."""

import numpy as np
import pytest

from fedray.config.granular import GranularConfig
from fedray.data.granular.edges import touching
from fedray.data.granular.segment import NODE_FEATURES, prepare_images, segment, to_gray
from fedray.data.images import mnist5k
from fedray.config.schema import DataConfig

SETTINGS = {
    "paper_defaults": GranularConfig(),
    "coarse": GranularConfig(purity=0.7, threshold=50, var_threshold=1000, blur_sigma=0),
}


@pytest.fixture(scope="module")
def digits28():
    """Five real MNIST digits and a noise image (0-255)."""
    data = mnist5k(DataConfig())
    images = data.x[::1000].reshape(-1, 28, 28) * 255.0
    noise = np.random.default_rng(0).integers(0, 256, size=(1, 28, 28)).astype(np.float64)
    return np.concatenate([images, noise])


@pytest.fixture(scope="module")
def segmented(digits28):
    """Each setting's balls of `digits28`, segmented once for the module."""
    return {name: segment(digits28, cfg) for name, cfg in SETTINGS.items()}


def coverage(boxes, shape):
    count = np.zeros(shape, dtype=np.int64)
    for r0, c0, r1, c1 in boxes:
        count[r0 : r1 + 1, c0 : c1 + 1] += 1
    return count


@pytest.mark.parametrize("name", SETTINGS)
def test_every_pixel_is_in_exactly_one_ball(digits28, segmented, name):
    granules = segmented[name]
    assert len(granules.num_nodes) == len(digits28)
    for k in range(len(digits28)):
        boxes, features, _ = granules.image(k)
        assert np.array_equal(coverage(boxes, (28, 28)), np.ones((28, 28), dtype=np.int64))
        assert features.shape == (len(boxes), len(NODE_FEATURES))


@pytest.mark.parametrize("name", SETTINGS)
def test_every_ball_respects_purity_and_variance(digits28, segmented, name):
    cfg, granules = SETTINGS[name], segmented[name]
    prepared = prepare_images(digits28, cfg)
    for k in range(len(digits28)):
        nodes = slice(granules.node_offsets[k], granules.node_offsets[k + 1])
        for (r0, c0, r1, c1), (sr, sc) in zip(granules.boxes[nodes], granules.seeds[nodes]):
            assert r0 <= sr <= r1 and c0 <= sc <= c1
            pixels = prepared[k, r0 : r1 + 1, c0 : c1 + 1].astype(np.float64)
            assert np.mean(np.abs(pixels - prepared[k, sr, sc]) <= cfg.threshold) >= cfg.purity
            assert np.var(pixels) <= cfg.var_threshold + 1e-9


def test_balls_summarise_their_pixels(digits28, segmented):
    cfg, granules = SETTINGS["coarse"], segmented["coarse"]
    prepared = prepare_images(digits28, cfg)
    boxes, features, _ = granules.image(3)
    r0, c0, r1, c1 = boxes[np.argmax((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))]
    row = features[np.argmax((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))]
    pixels = prepared[3, r0 : r1 + 1, c0 : c1 + 1]
    expected = [(r0 + r1) / 2 / 27, (c0 + c1) / 2 / 27, pixels.mean() / 255, pixels.var() / 1000,
                (r1 - r0 + 1) / 28, (c1 - c0 + 1) / 28, pixels.max() / 255, pixels.min() / 255]
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-7)


def test_same_seed_same_balls_and_batching_does_not_matter(digits28, segmented):
    cfg, whole = SETTINGS["coarse"], segmented["coarse"]
    again = segment(digits28, cfg)
    for a, b in zip(whole.__dict__.values(), again.__dict__.values()):
        assert np.array_equal(a, b)
    alone = segment(digits28[2:3], cfg)
    boxes, features, edges = whole.image(2)
    assert np.array_equal(alone.boxes, boxes) and np.array_equal(alone.edges, edges)
    assert np.array_equal(alone.features, features)


def test_a_constant_image_is_one_ball():
    granules = segment(np.full((2, 12, 9), 77.0), GranularConfig())
    assert granules.num_nodes.tolist() == [1, 1]
    assert granules.boxes.tolist() == [[0, 0, 11, 8]] * 2
    assert len(granules.edges) == 0


def test_two_flat_halves_are_two_touching_balls():
    image = np.zeros((1, 10, 10))
    image[0, :, 5:] = 200.0
    granules = segment(image, GranularConfig(blur_sigma=0))
    assert sorted(granules.boxes.tolist()) == [[0, 0, 9, 4], [0, 5, 9, 9]]
    assert granules.edges.tolist() == [[0, 1]]


def test_touching_rectangles_share_part_of_a_side():
    boxes = np.array([
        [0, 0, 1, 1],   # 0: top-left 2x2
        [0, 2, 0, 4],   # 1: right of 0, overlapping its rows: touches 0
        [2, 2, 3, 3],   # 2: meets 0 only at a corner: no edge with 0
        [2, 0, 3, 1],   # 3: below 0 (touches 0) and left of 2 (touches 2)
        [1, 2, 1, 4],   # 4: below 1 (touches 1), right of 0's second row (touches 0), above 2 (touches 2)
        [5, 0, 5, 4],   # 5: a row apart from everything: isolated
    ])
    assert touching(boxes).tolist() == [[0, 1], [0, 3], [0, 4], [1, 4], [2, 3], [2, 4]]


def test_rgb_images_become_luma():
    rgb = np.zeros((1, 2, 2, 3))
    rgb[..., 0] = 100.0
    assert np.allclose(to_gray(rgb), 29.9)
    with pytest.raises(ValueError, match=r"images must be \[N, H, W\]"):
        to_gray(np.zeros((4, 4)))
