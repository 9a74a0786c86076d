"""Build the federated view of a dataset: per-client shards and a server test split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig
from fedray.data.arrow import compact
from fedray.data.datasets import DataInfo
from fedray.data.plan import DataPlan, granular_info, plan_federated_dataset  # noqa: F401  (granular_info re-exported)
from fedray.data.tokenize import ByteTokenizer, Tokenizer

__all__ = ["DataInfo", "DataPlan", "FederatedDataset", "build_federated_dataset", "plan_federated_dataset"]


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
    """Every row in one process (tools, tests, benchmarks; a run's parties build their
    own from a `DataPlan`): the plan of `plan_federated_dataset`, materialised here."""
    plan = plan_federated_dataset(cfg, None, num_clients, seed, public_size, tokenizer or ByteTokenizer())
    return materialise(plan)


def materialise(plan: DataPlan) -> FederatedDataset:
    """The plan's rows, loaded in this process."""
    if plan.sites:
        raise ValueError("data.sites: the clients' rows are at their sites; they are read only there")
    data = plan.source.load()
    return FederatedDataset(
        train=data.table(plan.rows),
        offsets=plan.offsets,
        test=data.table(plan.test_rows),
        info=plan.info,
        owner_names=plan.owner_names,
        public=data.table(plan.public_rows) if len(plan.public_rows) else None,
        notes=plan.notes,
    )
