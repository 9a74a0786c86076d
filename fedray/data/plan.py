"""A run's data description: every party builds its own rows from it, and the driver holds none.

The driver plans a split from the rows' groups alone (labels, or owners: what the
partitioner and the stratified test split need) and ships the plan: per client, the
dataset's row numbers, plus the seed and config to load the dataset with. Each
client actor loads the dataset on its own node and takes its clients' rows
(`ShardPlan.build`); the server takes the test split and the public set the same way
(`DataPlan.test`, `DataPlan.public`). With `data.sites`, a client's rows are its
site's files, read on its node, and split among the site's clients there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig, ModelConfig
from fedray.config.sites import SiteConfig
from fedray.data.datasets import DATASET_INDEXES, DATASETS, ArrayDataset, DataIndex, DataInfo, PerClientData
from fedray.data.granular.segment import NODE_FEATURES
from fedray.data.shards import ClientShards
from fedray.data.split import deal, split_rows, take_public
from fedray.data.instructions import Conversations, encode_conversations
from fedray.data.chat import ChatFormat
from fedray.data.preferences import PreferenceTexts, tokenize_pairs
from fedray.data.text import TextCorpus, pack, select_owners

_SPLIT = 0xDA7A
"""Seeds the split's generator, `[seed, _SPLIT]` (a site's: `[seed, _SPLIT, _SITE, site]`)."""
_SITE = 0x5173


@dataclasses.dataclass(frozen=True)
class DataSource:
    """How to load the run's dataset in any process: config, not rows."""

    data: DataConfig
    model: ModelConfig
    """For the tokenizer of text datasets (`data.tokenizer: model` reads the model's)."""
    num_clients: int
    seed: int
    tokenizer: Any = dataclasses.field(default=None, compare=False)
    """A tokenizer object to use instead of building `data.tokenizer` (tests, tools)."""

    def load(self, path: str | None = None):
        """The whole dataset (an `ArrayDataset`, or text as `TokenBlocks`); `path`
        replaces `data.path` (a site's files)."""
        cfg = self.data if path is None else dataclasses.replace(self.data, path=path)
        return self._whole(DATASETS.build(cfg.dataset, cfg), cfg)

    def _whole(self, data, cfg: DataConfig):
        if isinstance(data, PerClientData):
            data = data.for_clients(self.num_clients, self.seed)
        if isinstance(data, PreferenceTexts):
            fmt = ChatFormat.for_tokenizer(self._tokenizer(), cfg.instruct.template.value, cfg.instruct.system)
            return tokenize_pairs(data, fmt, cfg.seq_len)
        if not isinstance(data, (ArrayDataset, TextCorpus, Conversations)):
            raise ValueError(f"data.dataset={cfg.dataset!r} returned a {type(data).__name__}, expected an "
                             "ArrayDataset, a TextCorpus or Conversations (fedray.data.datasets, .text, "
                             ".instructions)")
        if isinstance(data, TextCorpus):
            data = pack(select_owners(data, cfg), self._tokenizer(), cfg.seq_len)
        elif isinstance(data, Conversations):
            data = encode_conversations(data, self._tokenizer(), cfg)
        return data

    def tables(self, *row_sets: np.ndarray) -> list[pa.Table]:
        """The rows at each set of row numbers, loaded in this process; a dataset
        generated per client may generate only what they need (`tables_at`)."""
        built = DATASETS.build(self.data.dataset, self.data)
        if isinstance(built, PerClientData) and hasattr(built, "tables_at"):
            return built.tables_at(self.num_clients, self.seed, list(row_sets))
        data = self._whole(built, self.data)
        return [data.table(rows) for rows in row_sets]

    def index(self) -> DataIndex:
        """The rows' groups without their features where the dataset can give them so
        (`DATASET_INDEXES`), else from the loaded dataset."""
        cfg = self.data
        if cfg.dataset in DATASET_INDEXES.names():
            index = DATASET_INDEXES.build(cfg.dataset, cfg, self.num_clients, self.seed)
            if cfg.schedule.name is None or index.columns:
                return index
        return self.load().index()

    def _tokenizer(self):
        if self.tokenizer is not None:
            return self.tokenizer
        from fedray.data.tokenize import TOKENIZERS

        return TOKENIZERS.build(self.data.tokenizer, self.model)


@dataclasses.dataclass(frozen=True, eq=False)
class DataPlan:
    """Who holds which rows, without the rows: what the driver keeps and ships.

    `rows[offsets[c]:offsets[c+1]]` are client c's row numbers in the dataset
    `source` loads (the server's copy has no `rows`: it needs only the sizes). With
    `data.sites` the clients' rows are at their sites: `offsets` is None until their
    actors report their sizes (`with_sizes`). `test` and `public` are built from the
    source in the process that asks for them (the server)."""

    source: DataSource
    info: DataInfo
    offsets: np.ndarray | None
    rows: np.ndarray
    test_rows: np.ndarray
    public_rows: np.ndarray
    owner_names: tuple[str, ...] = ()
    check_columns: dict = dataclasses.field(default_factory=dict)
    """Per column a schedule filters on (`y`, `owner`): (training values, test values);
    dropped from the copies that travel."""
    notes: tuple[str, ...] = ()
    """What building the data cut or dropped (instruction rows), said once at start."""

    @property
    def num_clients(self) -> int:
        return self.source.num_clients

    @property
    def sites(self) -> tuple[SiteConfig, ...]:
        return tuple(self.source.data.sites)

    def num_examples(self, client_id: int) -> int:
        return int(self.offsets[client_id + 1] - self.offsets[client_id])

    def sizes(self) -> np.ndarray:
        """Examples per client (zeros while a site's sizes are unknown)."""
        return np.zeros(self.num_clients, np.int64) if self.offsets is None else np.diff(self.offsets)

    def with_sizes(self, sizes: Sequence[int]) -> "DataPlan":
        return dataclasses.replace(self, offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))

    def without_rows(self) -> "DataPlan":
        """The plan as the server (and, once the actors have theirs, the driver) keeps it."""
        return dataclasses.replace(self, rows=self.rows[:0], check_columns={})

    def shard_plan(self, client_ids: Sequence[int]) -> "ShardPlan":
        """What one actor needs to build its clients' shards."""
        ids = np.asarray(client_ids, dtype=np.int64)
        if self.sites:
            return ShardPlan(self.source, ids, None, self.rows[:0])
        starts, stops = self.offsets[ids], self.offsets[ids + 1]
        rows = np.concatenate([self.rows[a:b] for a, b in zip(starts, stops)]) if len(ids) else self.rows[:0]
        return ShardPlan(self.source, ids, np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64), rows)

    @functools.cached_property
    def _held_out(self) -> tuple[pa.Table, pa.Table | None]:
        test, public = self.source.tables(self.test_rows, self.public_rows)
        return test, public if len(self.public_rows) else None

    @property
    def test(self) -> pa.Table:
        """The server's held-out split, loaded here (once)."""
        return self._held_out[0]

    @property
    def public(self) -> pa.Table | None:
        """The public set of knowledge transfer (None: none), loaded here (once)."""
        return self._held_out[1]

    def shard(self, client_id: int) -> pa.Table:
        """One client's rows, loaded here (tools and tests; a run's actors build their own)."""
        shards, _ = self.shard_plan([client_id]).build()
        return shards[client_id]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_held_out", None)  # loaded where it is used, never shipped
        return state


def plan_federated_dataset(cfg: DataConfig, model: ModelConfig | None, num_clients: int, seed: int,
                           public_size: int = 0, tokenizer: Any = None) -> DataPlan:
    """Split off the test set stratified by class or owner and `public_size` public rows,
    and partition the rest among clients (with `data.sites`: the sites' clients split
    their own rows; the dataset of `data.path` gives the server its test and public
    rows), from the rows' groups alone."""
    source = DataSource(cfg, model if model is not None else ModelConfig(), num_clients, seed, tokenizer)
    index = source.index()
    rng = np.random.default_rng([seed, _SPLIT])
    train_idx, test_idx = split_rows(index.groups, index.test_mask, cfg, rng)
    train_idx, public_idx = take_public(train_idx, public_size, rng)
    info = index.info if cfg.granular is None else granular_info(index.info, cfg.dataset)
    if cfg.sites:
        offsets, rows = None, train_idx[:0]
    else:
        order, offsets = deal(index.groups[train_idx], num_clients, cfg, rng)
        rows = train_idx[order]
    checks = {name: (values[rows], values[test_idx]) for name, values in index.columns.items()}
    return DataPlan(source, info, offsets, rows, test_idx, public_idx, index.owner_names, checks, index.notes)


def granular_info(info: DataInfo, dataset: str) -> DataInfo:
    """What a model sees when `data.granular` turns every image into a ball graph:
    graph classification over nodes of `len(NODE_FEATURES)` features."""
    if len(info.image_shape) != 2:
        raise ValueError(f"data.granular segments images, but data.dataset={dataset} has no image shape "
                         "(use an image dataset: mnist5k, idx, digits)")
    return dataclasses.replace(info, task="graph_classification", num_features=len(NODE_FEATURES))


@dataclasses.dataclass(frozen=True, eq=False)
class ShardPlan:
    """One client actor's share of a `DataPlan`: its clients and their row numbers
    (`offsets` None: they are site clients, whose rows are their sites' files)."""

    source: DataSource
    client_ids: np.ndarray
    offsets: np.ndarray | None
    rows: np.ndarray

    def build(self):
        """(the clients' `ClientShards`, where each client's rows came from), loaded in
        this process: the dataset for planned rows, or each site's files on this node."""
        if self.offsets is not None:
            [table] = self.source.tables(self.rows)
            return ClientShards(table, self.client_ids, self.offsets), {}
        hosted = set(self.client_ids.tolist())
        built: dict[int, tuple[pa.Table, str]] = {}
        for number, site in enumerate(self.source.data.sites):
            if hosted.intersection(site.clients):
                shards, origin = site_shards(self.source, number, site)
                built.update({cid: (shards[cid], origin) for cid in site.clients if cid in hosted})
        ids = np.asarray(sorted(built), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum([built[c][0].num_rows for c in ids])]).astype(np.int64)
        table = pa.concat_tables([built[c][0] for c in ids]).combine_chunks()
        return ClientShards(table, ids, offsets), {c: built[c][1] for c in built}


def site_shards(source: DataSource, number: int, site: SiteConfig) -> tuple[dict[int, pa.Table], str]:
    """Every client of a site's rows (`data.partition` of the site's rows, minus its
    dataset's own test files), read here; and `path sha256:<digest>` of what was read."""
    path = os.path.expandvars(os.path.expanduser(site.path))
    if not os.path.exists(path):
        raise ValueError(f"data.sites[{number}].path: no such file or folder on this node: {path}")
    try:
        data = source.load(path)
    except ValueError as err:
        raise ValueError(f"data.sites[{number}] ({path}): {err}") from None
    index = data.index()
    rows = np.arange(len(index.groups)) if index.test_mask is None else np.flatnonzero(~index.test_mask)
    rng = np.random.default_rng([source.seed, _SPLIT, _SITE, number])
    order, offsets = deal(index.groups[rows], len(site.clients), source.data, rng)
    shards = {cid: data.table(rows[order[offsets[i]:offsets[i + 1]]]) for i, cid in enumerate(site.clients)}
    return shards, f"{path} sha256:{content_digest(Path(path))}"


def content_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def schedule_check_tables(plan: DataPlan, schedule: str | None) -> tuple[pa.Table, pa.Table]:
    """(training, test) tables of the columns a data schedule filters on, for checking that
    every task selects rows without loading features; `rotation` turns images, so its
    tables carry zero images of the data's size. With sites the training rows are at the
    sites: the test rows stand in for them."""
    tables = []
    for part in (0, 1):
        columns = {name: pa.array(values[part]) for name, values in plan.check_columns.items()}
        num_rows = len(plan.rows) if part == 0 else len(plan.test_rows)
        if schedule == "rotation":
            width = int(np.prod(plan.info.image_shape)) if plan.info.image_shape else plan.info.num_features
            columns["x"] = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(num_rows * width, np.float32)), width)
            columns.setdefault("y", pa.array(np.zeros(num_rows, np.int64)))
        tables.append(pa.table(columns) if columns else pa.table({"row": pa.array(np.arange(num_rows))}))
    return (tables[1] if plan.sites else tables[0]), tables[1]
