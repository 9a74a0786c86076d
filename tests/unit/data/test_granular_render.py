"""Rebuilding an image from its balls' node features (what a GrBFL client's input reveals)."""

import numpy as np
import pytest

from fedray.config.granular import GranularConfig
from fedray.config.schema import DataConfig
from fedray.data.granular.figure import boxes_from_features, render, render_nodes
from fedray.data.granular.segment import NODE_FEATURES, prepare_images, segment
from fedray.data.images import mnist5k

MEAN = NODE_FEATURES.index("mean")


@pytest.fixture(scope="module")
def digits():
    """Four real MNIST digits (0-255)."""
    return mnist5k(DataConfig()).x[::1250].reshape(-1, 28, 28) * 255.0


@pytest.mark.parametrize("crop", [(28, 28), (20, 28), (28, 17)], ids=["square", "wide", "tall"])
def test_features_encode_the_boxes_exactly(digits, crop):
    images = digits[:, : crop[0], : crop[1]]
    granules = segment(images, GranularConfig())
    for k in range(len(images)):
        boxes, features, _ = granules.image(k)
        np.testing.assert_array_equal(boxes_from_features(features, crop), boxes)


def test_constant_balls_render_the_prepared_image_exactly(digits):
    """With purity 1 and threshold 0 every ball is flat, so its mean is every pixel's value."""
    cfg = GranularConfig(purity=1.0, threshold=0, var_threshold=0, blur_sigma=0)
    granules = segment(digits, cfg)
    prepared = prepare_images(digits, cfg)
    for k in range(len(digits)):
        _, features, _ = granules.image(k)
        np.testing.assert_allclose(render_nodes(features, (28, 28)) * 255, prepared[k], atol=1e-3)


def test_coarse_balls_lose_detail_but_keep_each_balls_mean(digits):
    """At GrBFL's defaults the rendering differs from the image, but each ball's pixel sum is kept."""
    cfg = GranularConfig()
    granules = segment(digits, cfg)
    prepared = prepare_images(digits, cfg)
    boxes, features, _ = granules.image(0)
    image = render_nodes(features, (28, 28)) * 255
    assert np.abs(image - prepared[0]).max() > 10
    np.testing.assert_allclose(image, render(boxes, features[:, MEAN] * 255, (28, 28)), atol=1e-3)
    for r0, c0, r1, c1 in boxes[:20]:
        np.testing.assert_allclose(image[r0 : r1 + 1, c0 : c1 + 1].sum(),
                                   prepared[0, r0 : r1 + 1, c0 : c1 + 1].sum(), rtol=1e-4)
