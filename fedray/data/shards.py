"""Several clients' shards as one Arrow table: what a client actor builds from its plan.

A pool actor hosting 50,000 simulated clients gets one table (its clients' rows,
grouped by client) and the row offsets, not 50,000 small tables: a client's shard
is a zero-copy slice on the actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa


class ClientShards(Mapping):
    """client id -> its shard (a zero-copy slice of one table), for the hosted clients."""

    def __init__(self, table: pa.Table, client_ids: Sequence[int], offsets: np.ndarray):
        assert len(offsets) == len(client_ids) + 1 and offsets[-1] == table.num_rows
        self.table, self.offsets = table, np.asarray(offsets, dtype=np.int64)
        self.client_ids = np.asarray(client_ids, dtype=np.int64)
        self._index = {c: i for i, c in enumerate(self.client_ids.tolist())}

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


def hold_out(shards: Mapping[int, pa.Table], fraction: float, seed: int) -> tuple[Mapping[int, pa.Table], dict]:
    """(the training shards, each client's held-out rows) of `data.client_test_fraction`,
    split where the rows were read (on the client's actor): a client never trains on its
    held-out rows, and they never leave it. Fraction 0: the shards as they are, no split."""
    if not fraction:
        return shards, {}
    from fedray.data.split import client_holdout

    train, held = {}, {}
    for cid in shards:
        table = shards[cid]
        keep, test = client_holdout(table.num_rows, fraction, seed, cid)
        train[cid], held[cid] = table.take(keep), table.take(test)
    return train, held
