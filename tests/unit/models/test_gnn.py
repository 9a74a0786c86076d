"""GrBFL's graph network, the pixel CNN, and the graph_classification task's batches."""

import numpy as np
import pytest
import torch

from fedray.config.granular import GranularConfig
from fedray.config.schema import ModelConfig
from fedray.data.arrow import features_table
from fedray.data.datasets import DataInfo
from fedray.models.build import MODELS
from fedray.models.gnn import GraphBatch, normalized_adjacency, pool
from fedray.models.graph_task import GraphClassification

GRAPHS = DataInfo("graph_classification", 8, 4, image_shape=(10, 10))
PIXELS = DataInfo("classification", 100, 4, image_shape=(10, 10))


def test_normalized_adjacency_matches_the_dense_formula():
    edges = torch.tensor([[0, 1], [1, 2], [0, 2], [2, 3]])
    a = torch.eye(5)
    a[edges[:, 0], edges[:, 1]] = a[edges[:, 1], edges[:, 0]] = 1
    d = a.sum(1).rsqrt()
    torch.testing.assert_close(normalized_adjacency(edges, 5).to_dense(), d[:, None] * a * d[None, :])


def test_pooling_is_per_graph():
    h = torch.tensor([[1.0, -2.0], [3.0, -4.0], [5.0, 6.0]])
    mean, high = pool(h, torch.tensor([0, 0, 1]), 3)
    torch.testing.assert_close(mean, torch.tensor([[2.0, -3.0], [5.0, 6.0], [0.0, 0.0]]))
    torch.testing.assert_close(high, torch.tensor([[3.0, -2.0], [5.0, 6.0], [0.0, 0.0]]))


@pytest.fixture(scope="module")
def graph_data():
    rng = np.random.default_rng(0)
    x = rng.random((12, 100)).astype(np.float32)
    x[:, :50] = 0.0  # a flat half, so there are big balls too
    task = GraphClassification((10, 10), GranularConfig(purity=0.6, threshold=60, var_threshold=2000))
    return task, task.prepare(features_table(x, np.arange(12) % 4), torch.device("cpu"))


def test_a_batch_gives_each_graph_the_logits_it_gets_alone(graph_data):
    task, data = graph_data
    model = MODELS.build("grb_gnn", ModelConfig(hidden=[16, 16]), GRAPHS)
    index = torch.tensor([7, 2, 11, 0])
    together = model(data.collate(index))
    alone = torch.cat([model(data.collate(index[k : k + 1])) for k in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    batch = data.collate(index)
    assert isinstance(batch, GraphBatch) and batch.num_graphs == 4
    assert int(batch.edges.max()) < batch.x.shape[0]


def test_one_epoch_of_batches_visits_every_graph_once(graph_data):
    task, data = graph_data
    seen = torch.cat([y for _, y in task.batches(data, 5, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted((np.arange(12) % 4).tolist())
    model = MODELS.build("grb_gnn", ModelConfig(hidden=[16]), GRAPHS)
    metrics = task.evaluate(model, data, batch_size=5)
    assert set(metrics) == {"loss", "accuracy"} and metrics["loss"] > 0


def test_cnn_reads_flat_pixel_rows():
    model = MODELS.build("cnn", ModelConfig(hidden=[4, 8]), PIXELS)
    assert model(torch.zeros(3, 100)).shape == (3, 4)
    # 10x10 -> 5x5 -> 3x3 after two ceil-mode poolings
    assert sum(p.numel() for p in model.parameters()) == (9 * 4 + 4) + (9 * 4 * 8 + 8) + (8 * 9 * 4 + 4)


@pytest.mark.parametrize("name, info, message", [
    ("grb_gnn", PIXELS, "model.name=grb_gnn trains on granular-ball graphs: set data.granular"),
    ("cnn", GRAPHS, "model.name=cnn needs pixel images"),
    ("cnn", DataInfo("classification", 64, 10), "model.name=cnn needs pixel images"),
    ("mlp", GRAPHS, "model.name=mlp reads pixel rows, but data.granular"),
])
def test_a_model_refuses_data_it_cannot_read(name, info, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(name, ModelConfig(hidden=[8]), info)
