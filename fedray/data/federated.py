"""Build the federated view of a dataset: per-client shards and a server test split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig
from fedray.data.arrow import compact
from fedray.data.datasets import DATASETS, ArrayDataset, DataInfo, PerClientData
from fedray.data.granular.segment import NODE_FEATURES
from fedray.data.partition import PARTITIONERS
from fedray.data.instructions import Conversations, encode_conversations
from fedray.data.text import TextCorpus, pack, select_owners
from fedray.data.tokenize import ByteTokenizer, Tokenizer

__all__ = ["DataInfo", "FederatedDataset", "build_federated_dataset"]


@dataclasses.dataclass(frozen=True)
class FederatedDataset:
    """All training rows, grouped by client, plus the held-out test split.

    `train` is sorted by client so that a client's shard is the row range
    `offsets[c]:offsets[c+1]`: one table for a pool actor, or a compact copy of
    one range for a client's own actor.
    """

    train: pa.Table
    offsets: np.ndarray
    test: pa.Table
    info: DataInfo
    public: pa.Table | None = None
    """Rows held out of every client's data as the public set for knowledge transfer."""
    owner_names: tuple[str, ...] = ()
    """Names of the owners in a text table's `owner` column; with `natural`
    partitioning, client c is owner c."""
    notes: tuple[str, ...] = ()
    """What building the data cut or dropped (instruction rows), said once at start."""

    @property
    def num_clients(self) -> int:
        return len(self.offsets) - 1

    def num_examples(self, client_id: int) -> int:
        return int(self.offsets[client_id + 1] - self.offsets[client_id])

    def shard(self, client_id: int) -> pa.Table:
        start = int(self.offsets[client_id])
        return compact(self.train.slice(start, self.num_examples(client_id)))


def build_federated_dataset(
    cfg: DataConfig, num_clients: int, seed: int, tokenizer: Tokenizer | None = None,
    public_size: int = 0,
) -> FederatedDataset:
    """Load (and tokenise text), split off the test set stratified by class or owner
    and `public_size` public rows, and partition the rest among clients."""
    data = DATASETS.build(cfg.dataset, cfg)
    if isinstance(data, PerClientData):
        data = data.for_clients(num_clients, seed)
    if not isinstance(data, (ArrayDataset, TextCorpus, Conversations)):
        raise ValueError(f"data.dataset={cfg.dataset!r} returned a {type(data).__name__}, expected an "
                         "ArrayDataset, a TextCorpus or Conversations (fedray.data.datasets, .text, .instructions)")
    if isinstance(data, TextCorpus):
        data = pack(select_owners(data, cfg), tokenizer or ByteTokenizer(), cfg.seq_len)
    elif isinstance(data, Conversations):
        data = encode_conversations(data, tokenizer or ByteTokenizer(), cfg)
    rng = np.random.default_rng([seed, 0xDA7A])
    train_idx, test_idx = _split(data, cfg, rng)
    train_idx, public_idx = _take_public(train_idx, public_size, rng)
    shards = PARTITIONERS.build(cfg.partition, data.groups[train_idx], num_clients, cfg, rng)
    if not isinstance(shards, (list, tuple)) or len(shards) != num_clients or not all(
            isinstance(s, np.ndarray) and s.dtype.kind in "iu" for s in shards):
        raise ValueError(f"data.partition={cfg.partition!r} must return {num_clients} integer index arrays "
                         f"(one per client), got {type(shards).__name__}")
    order = np.concatenate([train_idx[s] for s in shards])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)
    return FederatedDataset(
        train=data.table(order),
        offsets=offsets,
        test=data.table(test_idx),
        info=data.info if cfg.granular is None else granular_info(data.info, cfg.dataset),
        owner_names=data.owner_names,
        public=data.table(public_idx) if len(public_idx) else None,
        notes=getattr(data, "notes", ()),
    )


def granular_info(info: DataInfo, dataset: str) -> DataInfo:
    """What a model sees when `data.granular` turns every image into a ball graph:
    graph classification over nodes of `len(NODE_FEATURES)` features."""
    if len(info.image_shape) != 2:
        raise ValueError(f"data.granular segments images, but data.dataset={dataset} has no image shape "
                         "(use an image dataset: mnist5k, idx, digits)")
    return dataclasses.replace(info, task="graph_classification", num_features=len(NODE_FEATURES))


def _split(data, cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) after `data.max_examples`: the dataset's own test
    split if it has one, else a stratified share `data.test_fraction`."""
    rows = np.arange(len(data.groups))
    if cfg.max_examples is not None and cfg.max_examples < len(rows):
        _, rows = _stratified_split(data.groups, cfg.max_examples / len(rows), rng)
    test_mask = getattr(data, "test_mask", None)
    if test_mask is not None:
        return rows[~test_mask[rows]], rows[test_mask[rows]]
    train, test = _stratified_split(data.groups[rows], cfg.test_fraction, rng)
    return rows[train], rows[test]


def _take_public(train_idx: np.ndarray, size: int, rng: np.random.Generator):
    """(the remaining training rows, `size` random rows for the public set)."""
    if size > len(train_idx) // 2:
        raise ValueError(f"server.distill.public_size={size} would take more than half of the "
                         f"{len(train_idx)} training rows")
    if not size:
        return train_idx, train_idx[:0]
    public = np.sort(rng.choice(train_idx, size=size, replace=False))
    return np.setdiff1d(train_idx, public), public


def _stratified_split(groups: np.ndarray, fraction: float, rng: np.random.Generator):
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
