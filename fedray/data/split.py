"""Which rows are held out (the server's test split, the public set) and which are dealt
to clients: computed from the rows' groups (class or owner) alone, never from features."""

from __future__ import annotations

import numpy as np

from fedray.config.schema import DataConfig
from fedray.data.partition import PARTITIONERS


def split_rows(groups: np.ndarray, test_mask: np.ndarray | None, cfg: DataConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) after `data.max_examples`: the dataset's own test
    split if it has one, else a stratified share `data.test_fraction` (none if 0)."""
    rows = np.arange(len(groups))
    if cfg.max_examples is not None and cfg.max_examples < len(rows):
        _, rows = stratified_split(groups, cfg.max_examples / len(rows), rng)
    if test_mask is not None:
        return rows[~test_mask[rows]], rows[test_mask[rows]]
    if not cfg.test_fraction:  # no server split (`server.evaluation.where: clients`)
        return rows, rows[:0]
    train, test = stratified_split(groups[rows], cfg.test_fraction, rng)
    return rows[train], rows[test]


def take_public(train_idx: np.ndarray, size: int, rng: np.random.Generator):
    """(the remaining training rows, `size` random rows for the public set)."""
    if size > len(train_idx) // 2:
        raise ValueError(f"server.distill.public_size={size} would take more than half of the "
                         f"{len(train_idx)} training rows")
    if not size:
        return train_idx, train_idx[:0]
    public = np.sort(rng.choice(train_idx, size=size, replace=False))
    return np.setdiff1d(train_idx, public), public


def deal(groups: np.ndarray, num_clients: int, cfg: DataConfig,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(row positions grouped by client, offsets): `data.partition` of rows whose groups
    are `groups`; client c's positions are `order[offsets[c]:offsets[c+1]]`."""
    shards = PARTITIONERS.build(cfg.partition, groups, num_clients, cfg, rng)
    if not isinstance(shards, (list, tuple)) or len(shards) != num_clients or not all(
            isinstance(s, np.ndarray) and s.dtype.kind in "iu" for s in shards):
        raise ValueError(f"data.partition={cfg.partition!r} must return {num_clients} integer index arrays "
                         f"(one per client), got {type(shards).__name__}")
    order = np.concatenate([np.asarray(s, dtype=np.int64) for s in shards]) if num_clients else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)
    return order, offsets


def stratified_split(groups: np.ndarray, fraction: float, rng: np.random.Generator):
    """About `fraction` of every group held out: at least one row, but never a
    group's only row (a text owner with one row keeps it for training)."""
    order = np.argsort(groups, kind="stable")  # each group's rows, in index order
    _, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    keep = np.minimum(counts - 1, np.maximum(1, np.round(fraction * counts).astype(np.int64)))
    test = [rng.permutation(order[s : s + n])[:k] for s, n, k in zip(starts, counts, keep)]
    test_idx = np.sort(np.concatenate(test))
    train = np.ones(len(groups), dtype=bool)
    train[test_idx] = False
    train_idx = np.flatnonzero(train)
    return train_idx, test_idx


_HOLDOUT = 0xE7A1
"""Seeds a client's held-out split, `[seed, _HOLDOUT, client]`."""


def num_held_out(num_rows: int | np.ndarray, fraction: float) -> int | np.ndarray:
    """Rows a client holds out of `num_rows` (`data.client_test_fraction`): about
    `fraction`, at least one, never all (a client keeps a row to train on). A pure
    function of the count, so the server knows every client's training size without
    its rows."""
    n = np.asarray(num_rows, dtype=np.int64)
    held = np.where(n >= 2, np.clip(np.round(fraction * n).astype(np.int64), 1, np.maximum(n - 1, 1)), 0)
    held = np.where(fraction > 0, held, 0)
    return int(held) if held.ndim == 0 else held


def client_holdout(num_rows: int, fraction: float, seed: int, client_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, held-out positions) of a client's `num_rows` rows, both
    sorted: a seeded random `num_held_out` of them, drawn on the client from its own
    rows, the same whichever actor hosts it."""
    held = num_held_out(num_rows, fraction)
    rng = np.random.default_rng([seed, _HOLDOUT, client_id])
    test = np.sort(rng.permutation(num_rows)[:held]).astype(np.int64)
    keep = np.ones(num_rows, dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep).astype(np.int64), test
