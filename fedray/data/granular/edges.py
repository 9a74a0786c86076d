"""Which granular balls touch: the edge rule of the ball graph."""

from __future__ import annotations

import numpy as np


def touching(boxes: np.ndarray) -> np.ndarray:
    """Pairs (i, j), i < j, of rectangles that share part of a side.

    `boxes` are [n, 4] inclusive (first row, first column, last row, last column)
    and must not overlap. Two touch when a pixel of one is a 4-neighbour of a
    pixel of the other: their row spans overlap and their columns are adjacent,
    or the other way round. Meeting only at a corner is not touching.
    """
    b = np.asarray(boxes, dtype=np.int64)
    r0, c0, r1, c1 = (b[:, k] for k in range(4))
    rows_overlap = (r0[:, None] <= r1[None, :]) & (r0[None, :] <= r1[:, None])
    cols_overlap = (c0[:, None] <= c1[None, :]) & (c0[None, :] <= c1[:, None])
    cols_adjacent = (c1[:, None] + 1 == c0[None, :]) | (c1[None, :] + 1 == c0[:, None])
    rows_adjacent = (r1[:, None] + 1 == r0[None, :]) | (r1[None, :] + 1 == r0[:, None])
    adjacent = (rows_overlap & cols_adjacent) | (cols_overlap & rows_adjacent)
    i, j = np.nonzero(np.triu(adjacent, k=1))
    return np.stack([i, j], axis=1).astype(np.int32)
