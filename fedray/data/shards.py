"""Several clients' shards as one Arrow table: what a client actor is sent.

A pool actor hosting 50,000 simulated clients gets one table (its clients' rows,
grouped by client) and the row offsets, not 50,000 small tables: one object to
serialise and put into the object store, and a client's shard is a zero-copy
slice on the actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from fedray.data.federated import FederatedDataset


class ClientShards(Mapping):
    """client id -> its shard (a zero-copy slice of one table), for the hosted clients."""

    def __init__(self, table: pa.Table, client_ids: Sequence[int], offsets: np.ndarray):
        assert len(offsets) == len(client_ids) + 1 and offsets[-1] == table.num_rows
        self.table, self.offsets = table, np.asarray(offsets, dtype=np.int64)
        self.client_ids = np.asarray(client_ids, dtype=np.int64)
        self._index = {c: i for i, c in enumerate(self.client_ids.tolist())}

    @classmethod
    def gather(cls, dataset: FederatedDataset, client_ids: Sequence[int]) -> "ClientShards":
        """The clients' rows copied out of the training table in one `take` (a compact
        table: pickling a slice would serialise the whole parent)."""
        ids = np.asarray(client_ids, dtype=np.int64)
        starts, stops = dataset.offsets[ids], dataset.offsets[ids + 1]
        sizes = stops - starts
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # row r of the result comes from starts[client] + (r - offsets[client])
        rows = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], sizes)
        return cls(dataset.train.take(pa.array(rows)), ids, offsets)

    def __getitem__(self, client_id: int) -> pa.Table:
        i = self._index[client_id]
        start = int(self.offsets[i])
        return self.table.slice(start, int(self.offsets[i + 1]) - start)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._index

    def __iter__(self) -> Iterator[int]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __reduce__(self):
        return ClientShards, (self.table, self.client_ids, self.offsets)
