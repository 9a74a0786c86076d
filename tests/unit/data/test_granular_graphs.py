"""Ball graphs as Arrow tables, and the cache of segmented shards."""

import numpy as np
import pyarrow.ipc as ipc
import pytest

from fedray.config.granular import GranularConfig
from fedray.data.arrow import features_table
from fedray.data.granular.graphs import boxes_of, cache_key, graph_arrays, graph_table, segment_table
from fedray.data.granular.segment import segment

CFG = GranularConfig(purity=0.8, threshold=40, var_threshold=500)


@pytest.fixture(scope="module")
def pixels():
    """Twelve 10x10 images of two flat blocks on a dark ground, pixels in [0, 1]."""
    images = np.zeros((12, 10, 10), dtype=np.float32)
    for k in range(12):
        images[k, k % 5 : k % 5 + 4, 1:4] = 0.9
        images[k, 6:9, k % 6 : k % 6 + 3] = 0.5
    return images.reshape(12, -1), np.arange(12) % 3


def test_graph_table_round_trips_and_slices(pixels):
    x, y = pixels
    granules = segment(x.reshape(-1, 10, 10) * 255, CFG)
    table = graph_table(granules, y)
    arrays = graph_arrays(table)
    assert np.array_equal(arrays.nodes, granules.features)
    assert np.array_equal(arrays.edges, granules.edges)
    assert np.array_equal(arrays.node_offsets, granules.node_offsets)
    assert np.array_equal(arrays.y, y)
    part = graph_arrays(table.slice(4, 3))
    assert np.array_equal(part.nodes, granules.features[granules.node_offsets[4] : granules.node_offsets[7]])
    assert np.array_equal(part.node_offsets, granules.node_offsets[4:8] - granules.node_offsets[4])
    boxes, offsets = boxes_of(table.slice(4, 3))
    assert np.array_equal(boxes, granules.boxes[granules.node_offsets[4] : granules.node_offsets[7]])


def test_a_shard_is_segmented_once_then_read_from_the_cache(pixels, tmp_path):
    x, y = pixels
    shard = features_table(x, y)
    first = segment_table(shard, (10, 10), CFG, tmp_path)
    files = list(tmp_path.glob("*.arrow"))
    assert [f.stem for f in files] == [cache_key(x, y, (10, 10), CFG)]
    with ipc.open_file(files[0]) as reader:
        assert reader.read_all().equals(first)
    # what is read back is the file: replace it and the replacement comes back
    marker = first.slice(0, 2)
    with ipc.new_file(files[0], marker.schema) as writer:
        writer.write_table(marker)
    assert segment_table(shard, (10, 10), CFG, tmp_path).num_rows == 2


def test_the_key_changes_with_data_and_settings_but_not_the_cache_dir(pixels):
    x, y = pixels
    key = cache_key(x, y, (10, 10), CFG)
    assert cache_key(x, y, (10, 10), GranularConfig(**{**CFG.__dict__, "cache_dir": "/elsewhere"})) == key
    assert cache_key(x, y, (10, 10), GranularConfig(**{**CFG.__dict__, "purity": 0.9})) != key
    assert cache_key(x[:, ::-1], y, (10, 10), CFG) != key
    assert cache_key(x, (y + 1) % 3, (10, 10), CFG) != key


def test_rows_that_are_not_images_of_the_shape_are_refused(pixels):
    x, y = pixels
    with pytest.raises(ValueError, match=r"rows of 100 pixels are not images of shape \(8, 8\)"):
        segment_table(features_table(x, y), (8, 8), CFG)
