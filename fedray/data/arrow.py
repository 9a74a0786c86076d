"""Arrow tables for examples: features (or token rows) as a fixed-size list column.

Tables travel to actors as Arrow buffers (no per-row Python objects), and
`to_numpy` / `token_arrays` give zero-copy views for training.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def features_table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    """A table with `x` (fixed_size_list<float32>[d]) and `y` (int64)."""
    return pa.table({"x": _rows_column(x, np.float32, len(y)), "y": pa.array(np.asarray(y, dtype=np.int64))})


def to_numpy(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) views of a features table; read-only, copied only if chunked."""
    return _rows(table, "x"), _values(table, "y")


def tokens_table(ids: np.ndarray, owner: np.ndarray) -> pa.Table:
    """Packed token rows: `input_ids` (fixed_size_list<int32>[seq_len]) and `owner` (int64)."""
    return pa.table({
        "input_ids": _rows_column(ids, np.int32, len(owner)),
        "owner": pa.array(np.asarray(owner, dtype=np.int64)),
    })


def token_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids [rows, seq_len], owner [rows]) views of a tokens table."""
    return _rows(table, "input_ids"), _values(table, "owner")


def matrix_column(matrix: np.ndarray, dtype: type) -> pa.FixedSizeListArray:
    """A [rows, width] matrix as a fixed_size_list<dtype>[width] column."""
    return _rows_column(matrix, dtype, len(matrix))


def matrix_values(table: pa.Table, name: str) -> np.ndarray:
    """The [rows, width] view of a fixed-size list column."""
    return _rows(table, name)


def compact(table: pa.Table) -> pa.Table:
    """A copy that owns exactly its rows.

    Pickling a slice serialises the parent's whole buffers, so a client's shard
    is compacted before it is sent to that client's actor.
    """
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _rows_column(matrix: np.ndarray, dtype: type, num_rows: int) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=dtype)
    assert matrix.ndim == 2 and len(matrix) == num_rows, (matrix.shape, num_rows)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def _rows(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)


def _values(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False)
