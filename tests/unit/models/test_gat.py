"""GrBFL's attention network (`grb_gat`) and batch-norm statistics in the flat exchange."""

import numpy as np
import pytest
import torch

from fedray.config.granular import GranularConfig
from fedray.config.schema import ModelConfig
from fedray.data.arrow import features_table
from fedray.data.datasets import DataInfo
from fedray.models.build import MODELS
from fedray.models.flat import get_delta, get_flat, param_spec, set_flat
from fedray.models.gat import Adjacency, GATLayer, _HeadwiseAggregate, directed_edges, segment_softmax
from fedray.models.graph_task import GraphClassification

GRAPHS = DataInfo("graph_classification", 8, 4, image_shape=(10, 10))
PIXELS = DataInfo("classification", 100, 4, image_shape=(10, 10))
SMALL = ModelConfig(name="grb_gat", hidden=[4, 8], config={"heads": 4})


@pytest.fixture(scope="module")
def graph_data():
    rng = np.random.default_rng(0)
    x = rng.random((12, 100)).astype(np.float32)
    x[:, :50] = 0.0
    task = GraphClassification((10, 10), GranularConfig(purity=0.6, threshold=60, var_threshold=2000))
    return task, task.prepare(features_table(x, np.arange(12) % 4), torch.device("cpu"))


def test_attention_matches_the_dense_formula():
    torch.manual_seed(0)
    layer = GATLayer(3, 2, heads=2)
    with torch.no_grad():
        layer.bias.normal_()
    h, edges = torch.randn(4, 3), torch.tensor([[0, 1], [1, 2], [0, 3]])
    adjacency = torch.eye(4, dtype=torch.bool)
    adjacency[edges[:, 0], edges[:, 1]] = adjacency[edges[:, 1], edges[:, 0]] = True
    z = (h @ layer.project.weight.T).view(4, 2, 2)
    expected = []
    for k in range(2):
        s, d = z[:, k] @ layer.att_source[k], z[:, k] @ layer.att_target[k]
        scores = torch.nn.functional.leaky_relu(d[:, None] + s[None, :], 0.2)  # [target, source]
        alpha = torch.softmax(scores.masked_fill(~adjacency, float("-inf")), dim=1)
        expected.append(alpha @ z[:, k])
    expected = torch.cat(expected, dim=1) + layer.bias
    torch.testing.assert_close(layer(h, Adjacency(*directed_edges(edges, 4), 4)), expected)


def test_the_authors_size_keeps_every_concatenation_256_wide():
    model = MODELS.build("grb_gat", ModelConfig(hidden=[16, 32, 64], config={"heads": 16}), GRAPHS)
    assert [b.attention.heads for b in model.blocks] == [16, 8, 4]
    assert [b.attention.project.out_features for b in model.blocks] == [256, 256, 256]
    # the first two blocks narrow to their own head width, which the next block reads
    assert [b.attention.project.in_features for b in model.blocks] == [8, 16, 32]
    assert model.head.in_features == 256 and model.blocks[2].linear is None


def test_in_eval_mode_a_batch_gives_each_graph_its_own_logits(graph_data):
    _, data = graph_data
    model = MODELS.build("grb_gat", SMALL, GRAPHS).eval()
    index = torch.tensor([7, 2, 11, 0])
    together = model(data.collate(index))
    alone = torch.cat([model(data.collate(index[k : k + 1])) for k in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_batch_norm_statistics_travel_and_the_count_stays():
    model = MODELS.build("grb_gat", SMALL, GRAPHS)
    spec = param_spec(model)
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 3
    for name in norms:
        assert f"{name}.running_mean" in spec.names and f"{name}.running_var" in spec.names
    assert not any(n.endswith("num_batches_tracked") for n in spec.names)
    trained = sum(p.numel() for p in model.parameters())
    statistics = sum(2 * m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert spec.num_params == trained + statistics


def test_the_server_model_takes_the_mean_of_the_clients_statistics(graph_data):
    """FedAvg over flat deltas averages running means and variances like weights."""
    _, data = graph_data
    server = MODELS.build("grb_gat", SMALL, GRAPHS)
    spec = param_spec(server)
    base = get_flat(server, spec)
    deltas, means = [], []
    for index in (torch.arange(0, 6), torch.arange(6, 12)):
        client = MODELS.build("grb_gat", SMALL, GRAPHS).train()
        set_flat(client, spec, base)
        client(data.collate(index))  # a forward pass in train mode moves the statistics
        deltas.append(get_delta(client, spec, base, np.empty_like(base)))
        means.append(client.blocks[0].norm.running_mean.clone())
    weights = np.array([0.25, 0.75], dtype=np.float32)
    set_flat(server, spec, base + weights[0] * deltas[0] + weights[1] * deltas[1])
    assert not torch.allclose(means[0], means[1])
    torch.testing.assert_close(server.blocks[0].norm.running_mean, 0.25 * means[0] + 0.75 * means[1])


@pytest.mark.parametrize("cfg, info, message", [
    (SMALL, PIXELS, "model.name=grb_gat trains on granular-ball graphs: set data.granular"),
    (ModelConfig(name="grb_gat", hidden=[4, 3], config={"heads": 4}), GRAPHS,
     r"each width must divide hidden\[0\] \* heads = 16"),
    (ModelConfig(name="grb_gat", hidden=[4], config={"head": 4}), GRAPHS,
     r"model.config for grb_gat takes only 'heads', got \['head'\]"),
])
def test_grb_gat_refuses_what_it_cannot_build(cfg, info, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build("grb_gat", cfg, info)


def test_a_variance_pushed_below_zero_loads_as_zero():
    """DP noise on an averaged statistic must not give batch norm a negative variance."""
    model = MODELS.build("grb_gat", SMALL, GRAPHS)
    spec = param_spec(model)
    flat = get_flat(model, spec)
    spec.unflatten(flat)["blocks.0.norm.running_var"][:] = -1.0
    set_flat(model, spec, flat)
    assert float(model.blocks[0].norm.running_var.min()) == 0.0


def test_a_frozen_batch_norm_keeps_its_statistics_home():
    """Under PEFT only the adapters travel: a frozen base's batch norm sends nothing."""
    model = MODELS.build("grb_gat", SMALL, GRAPHS)
    for p in model.blocks[0].norm.parameters():
        p.requires_grad_(False)
    names = param_spec(model).names
    assert not any(n.startswith("blocks.0.norm.") for n in names)
    assert "blocks.0.norm_out.running_mean" in names


def _edge_list_attention(layer: GATLayer, h: torch.Tensor, source: torch.Tensor, target: torch.Tensor):
    """The layer written edge by edge (messages gathered, weighted, summed per target)."""
    z = layer.project(h).view(-1, layer.heads, layer.width)
    scores = (z * layer.att_source).sum(-1)[source] + (z * layer.att_target).sum(-1)[target]
    alpha = segment_softmax(torch.nn.functional.leaky_relu(scores, 0.2), target, h.shape[0])
    messages = (alpha[:, :, None] * z[source]).reshape(-1, layer.heads * layer.width)
    return torch.zeros(h.shape[0], layer.heads * layer.width, dtype=h.dtype).index_add_(0, target, messages) + layer.bias


def test_the_sparse_aggregation_has_the_edge_lists_values_and_gradients():
    """Unsorted edges, a repeated pair and a node without neighbours: forward and every
    parameter's gradient agree with the edge-by-edge formula."""
    torch.manual_seed(1)
    layer = GATLayer(5, 3, heads=4).double()
    h = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    edges = torch.tensor([[3, 1], [0, 2], [5, 4], [2, 7], [0, 2], [6, 0], [1, 5]])  # node 8 alone
    source, target = directed_edges(edges, 9)
    reference = _edge_list_attention(layer, h, source, target)
    weights = torch.randn_like(reference)
    expected = torch.autograd.grad((reference * weights).sum(), [h, *layer.parameters()])
    out = layer(h, Adjacency(source, target, 9))
    torch.testing.assert_close(out, reference)
    for got, want in zip(torch.autograd.grad((out * weights).sum(), [h, *layer.parameters()]), expected):
        torch.testing.assert_close(got, want)


def test_the_headwise_aggregation_passes_gradcheck():
    torch.manual_seed(2)
    source, target = directed_edges(torch.tensor([[0, 1], [1, 2], [3, 2], [0, 3]]), 5)
    adjacency = Adjacency(source, target, 5)
    weights = torch.rand(2, adjacency.num_edges, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: _HeadwiseAggregate.apply(w, x, adjacency), (weights, z))
