"""Tasks: how a model's batches, loss and evaluation metrics are defined.

The local training loop and the server's evaluation are task-agnostic; a task
turns an Arrow shard into device tensors once, cuts batches, and computes the
loss and the metrics reported in metrics.parquet.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import pyarrow as pa
import torch
import torch.nn.functional as F

from fedray.config.registry import Registry
from fedray.data.arrow import to_numpy


class Task(Protocol):
    def prepare(self, table: pa.Table, device: torch.device) -> Any:
        """Convert a shard to tensors on `device`, once."""

    def num_examples(self, data: Any) -> int: ...

    def batches(self, data: Any, batch_size: int, generator: torch.Generator) -> Iterator[Any]:
        """One shuffled pass over the data."""

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Mean loss of a batch."""

    def evaluate(self, model: torch.nn.Module, data: Any, batch_size: int) -> dict[str, float]:
        """At least `loss`; `accuracy` where it means something."""


TASKS: Registry[type] = Registry("task")


@TASKS.register("classification")
class Classification:
    """Cross-entropy over class logits; accuracy as the headline metric."""

    def prepare(self, table: pa.Table, device: torch.device):
        x, y = to_numpy(table)
        return torch.tensor(x, device=device), torch.tensor(y, device=device)

    def num_examples(self, data) -> int:
        return int(data[1].shape[0])

    def inputs(self, data):
        """The model inputs of prepared data (for logits on a public set)."""
        return data[0]

    def batches(self, data, batch_size: int, generator: torch.Generator):
        x, y = data
        order = torch.randperm(len(y), generator=generator).to(y.device)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict[str, float]:
        x, y = data
        total_loss, correct = 0.0, 0
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
        n = max(1, len(y))
        return {"loss": total_loss / n, "accuracy": correct / n}
