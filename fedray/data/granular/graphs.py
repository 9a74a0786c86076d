"""Ball graphs as Arrow tables, and the on-disk cache of segmented shards.

A graph table has one row per image: `nodes` (list of fixed-size float32 feature
rows), `edges` (list of (i, j) pairs, numbered within the image), `boxes` (list
of (r0, c0, r1, c1), for pictures) and `y`. Columns are built from the flat
arrays of a segmentation and read back as flat arrays plus offsets, never row by
row. A shard is segmented once: the table is written to `<cache>/<hash>.arrow`
(Arrow IPC), keyed by the shard's pixels and labels and every segmentation
setting, so a restarted actor, a resumed run or a second run over the same
shard reads it instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from fedray.config.granular import GranularConfig
from fedray.data.arrow import to_numpy
from fedray.data.granular.segment import NODE_FEATURES, Granules, segment

ALGORITHM_VERSION = 1
"""Part of every cache key: bump it when segmentation output changes."""


@dataclasses.dataclass(frozen=True)
class GraphArrays:
    """A graph table's columns as flat arrays with per-graph offsets."""

    nodes: np.ndarray
    """float32 [total nodes, features]."""
    edges: np.ndarray
    """int64 [total edges, 2], node numbers within their graph."""
    node_offsets: np.ndarray
    edge_offsets: np.ndarray
    y: np.ndarray


def graph_table(granules: Granules, y: np.ndarray) -> pa.Table:
    """One row per image of a segmentation, with its label."""
    def nested(flat: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
        rows = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(flat).reshape(-1)), flat.shape[1])
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), rows)

    return pa.table({
        "nodes": nested(granules.features, granules.node_offsets),
        "edges": nested(granules.edges, granules.edge_offsets),
        "boxes": nested(granules.boxes, granules.node_offsets),
        "y": pa.array(np.asarray(y, dtype=np.int64)),
    })


def graph_arrays(table: pa.Table) -> GraphArrays:
    """Flat views of a graph table (copied only where its chunks must be joined)."""
    nodes, node_offsets = _flat(table, "nodes")
    edges, edge_offsets = _flat(table, "edges")
    y = table.column("y").combine_chunks().to_numpy(zero_copy_only=False)
    return GraphArrays(nodes.astype(np.float32, copy=False), edges.astype(np.int64), node_offsets,
                       edge_offsets, y)


def boxes_of(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [total, 4], offsets [rows + 1]) of a graph table."""
    return _flat(table, "boxes")


def _flat(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    column = table.column(name).combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    inner = column.values  # the rows of every list, unsliced
    width = inner.type.list_size
    flat = inner.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return flat[offsets[0] : offsets[-1]], offsets - offsets[0]


# ---- segmenting a pixel shard, with the cache ------------------------------------------


def cache_key(x: np.ndarray, y: np.ndarray, image_shape: tuple[int, ...], cfg: GranularConfig) -> str:
    """Hash of the pixels, labels, image shape and segmentation settings."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    digest = hashlib.sha256()
    digest.update(json.dumps([ALGORITHM_VERSION, list(image_shape), settings], sort_keys=True).encode())
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()[:32]


def segment_table(table: pa.Table, image_shape: tuple[int, ...], cfg: GranularConfig,
                  cache_dir: str | os.PathLike | None = None) -> pa.Table:
    """The graph table of a pixel table (`x` rows in [0, 1], `y`), from the cache if
    it holds one. The segmentation's wall time is kept in the table's metadata."""
    x, y = to_numpy(table)
    expected = int(np.prod(image_shape))
    if x.shape[1] != expected:
        raise ValueError(f"data.granular: rows of {x.shape[1]} pixels are not images of shape {image_shape}")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(x, y, image_shape, cfg)}.arrow"
        if path.is_file():
            with ipc.open_file(path) as reader:
                return reader.read_all()
    start = time.perf_counter()
    granules = segment(x.reshape(-1, *image_shape) * 255.0, cfg)
    seconds = time.perf_counter() - start
    graphs = graph_table(granules, y).replace_schema_metadata({
        "segment_seconds": f"{seconds:.6f}",
        "node_features": ",".join(NODE_FEATURES),
    })
    if path is not None:
        _write_atomic(path, graphs)
    return graphs


def _write_atomic(path: Path, table: pa.Table) -> None:
    """Write under a temporary name and rename: concurrent actors segmenting the
    same shard, or a crash mid-write, never leave a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh, ipc.new_file(fh, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
