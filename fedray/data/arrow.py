"""Arrow tables for examples: features (or token rows) as a fixed-size list column.

Tables travel to actors as Arrow buffers (no per-row Python objects), and
`to_numpy` gives zero-copy views for training.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def features_table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    """A table with `x` (fixed_size_list<float32>[d]) and `y` (int64)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.ndim == 2 and len(x) == len(y), (x.shape, len(y))
    flat = pa.array(x.reshape(-1), type=pa.float32())
    return pa.table({
        "x": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]),
        "y": pa.array(np.asarray(y, dtype=np.int64)),
    })


def to_numpy(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) views of a features table; read-only, copied only if chunked."""
    x_col = table.column("x").combine_chunks()
    width = x_col.type.list_size
    x = x_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    y = table.column("y").combine_chunks().to_numpy(zero_copy_only=False)
    return x, y


def compact(table: pa.Table) -> pa.Table:
    """A copy that owns exactly its rows.

    Pickling a slice serialises the parent's whole buffers, so a client's shard
    is compacted before it is sent to that client's actor.
    """
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64)))


def tokens_table(ids: np.ndarray, owner: np.ndarray) -> pa.Table:
    """Packed token rows: `input_ids` (fixed_size_list<int32>[seq_len]) and `owner` (int64)."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    assert ids.ndim == 2 and len(ids) == len(owner), (ids.shape, len(owner))
    flat = pa.array(ids.reshape(-1), type=pa.int32())
    return pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(flat, ids.shape[1]),
        "owner": pa.array(np.asarray(owner, dtype=np.int64)),
    })


def token_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids [rows, seq_len], owner [rows]) views of a tokens table."""
    col = table.column("input_ids").combine_chunks()
    ids = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
    owner = table.column("owner").combine_chunks().to_numpy(zero_copy_only=False)
    return ids, owner
