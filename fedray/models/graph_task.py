"""The `graph_classification` task: images segmented into granular-ball graphs (GrBFL).

`prepare` receives a pixel shard (an Arrow table like any other), turns it into
its graph table once (read from the cache when this shard was segmented
before), and keeps the graphs on the device as flat tensors with per-graph
offsets; minibatches are cut from them by index arithmetic, with no per-graph
Python objects.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import torch
import torch.nn.functional as F

from fedray.config.granular import GranularConfig
from fedray.config.schema import RunConfig
from fedray.data.datasets import DataInfo
from fedray.data.granular.graphs import graph_arrays, segment_table
from fedray.models.gnn import GraphBatch


@dataclasses.dataclass(frozen=True)
class GraphData:
    """A shard's graphs on a device."""

    nodes: torch.Tensor
    edges: torch.Tensor
    node_offsets: torch.Tensor
    edge_offsets: torch.Tensor
    y: torch.Tensor

    def collate(self, index: torch.Tensor) -> GraphBatch:
        """The graphs `index` stacked into one batch, their node numbers shifted."""
        node_start, node_count = self.node_offsets[index], self.node_offsets[index + 1] - self.node_offsets[index]
        edge_start, edge_count = self.edge_offsets[index], self.edge_offsets[index + 1] - self.edge_offsets[index]
        nodes, new_node_start = _ranges(node_start, node_count)
        edges, _ = _ranges(edge_start, edge_count)
        shift = new_node_start.repeat_interleave(edge_count)
        graph = torch.arange(len(index), device=index.device).repeat_interleave(node_count)
        return GraphBatch(self.nodes[nodes], self.edges[edges] + shift[:, None], graph, len(index))


def _ranges(start: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(concatenated arange(start[k], start[k] + count[k]) over k, where each range
    begins in the result)."""
    begins = torch.cumsum(count, 0) - count
    within = torch.arange(int(count.sum()), device=start.device) - begins.repeat_interleave(count)
    return start.repeat_interleave(count) + within, begins


class GraphClassification:
    """Cross-entropy over graph logits; accuracy as the headline metric."""

    def __init__(self, image_shape: tuple[int, ...], granular: GranularConfig | None = None,
                 cache_dir: str | os.PathLike | None = None):
        """Pixel shards hold images of `image_shape`; `cache_dir` None: no cache."""
        self.image_shape = tuple(image_shape)
        self.granular = granular or GranularConfig()
        self.cache_dir = cache_dir

    @classmethod
    def from_config(cls, info: DataInfo, cfg: RunConfig) -> "GraphClassification":
        return cls(info.image_shape, cfg.data.granular, granular_cache_dir(cfg))

    def prepare(self, table: pa.Table, device: torch.device) -> GraphData:
        graphs = table if "nodes" in table.column_names else segment_table(
            table, self.image_shape, self.granular, self.cache_dir)
        arrays = graph_arrays(graphs)

        def tensor(a, dtype=None):
            return torch.tensor(a, dtype=dtype, device=device)

        return GraphData(tensor(arrays.nodes), tensor(arrays.edges), tensor(arrays.node_offsets),
                         tensor(arrays.edge_offsets), tensor(arrays.y, torch.long))

    def num_examples(self, data: GraphData) -> int:
        return int(data.y.shape[0])

    def inputs(self, data: GraphData) -> GraphBatch:
        """Every graph as one batch (for logits on a public set)."""
        return data.collate(torch.arange(len(data.y), device=data.y.device))

    def batches(self, data: GraphData, batch_size: int, generator: torch.Generator) -> Iterator:
        order = torch.randperm(len(data.y), generator=generator).to(data.y.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield data.collate(index), data.y[index]

    def loss(self, model, batch) -> torch.Tensor:
        graphs, y = batch
        return F.cross_entropy(model(graphs), y)

    @torch.no_grad()
    def evaluate(self, model, data: GraphData, batch_size: int) -> dict[str, float]:
        total_loss, correct, n = 0.0, 0, len(data.y)
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(n, start + batch_size), device=data.y.device)
            logits, target = model(data.collate(index)), data.y[index]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
        return {"loss": total_loss / max(1, n), "accuracy": correct / max(1, n)}


def granular_cache_dir(cfg: RunConfig) -> Path:
    """`data.granular.cache_dir`, else `<output_dir>/granular_cache` (a local output
    directory), else `$FEDRAY_CACHE/granular` or `~/.cache/fedray/granular` (an
    output URI such as s3://, which cannot hold an Arrow cache for local reads)."""
    granular = cfg.data.granular or GranularConfig()
    if granular.cache_dir is not None:
        return Path(granular.cache_dir).expanduser()
    if "://" not in cfg.output_dir:
        return Path(cfg.output_dir).expanduser() / "granular_cache"
    return Path(os.environ.get("FEDRAY_CACHE") or "~/.cache/fedray").expanduser() / "granular"
