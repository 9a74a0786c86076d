"""Tasks: how a model's batches, loss and evaluation metrics are defined.

The local training loop and the server's evaluation are task-agnostic; a task
turns an Arrow shard into device tensors once, cuts batches, and computes the
loss and the metrics reported in metrics.parquet.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import pyarrow as pa
import torch
import torch.nn.functional as F

from fedray.config.registry import Registry
from fedray.data.arrow import to_numpy, token_arrays

if TYPE_CHECKING:
    from fedray.config.schema import RunConfig
    from fedray.data.datasets import DataInfo


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
"""Task classes by `DataInfo.task`. A class built from the run's settings (e.g.
`graph_classification`: the segmentation and its cache) has a classmethod
`from_config(info, cfg)`; the others take no arguments."""


TASKS.register_lazy("graph_classification", "fedray.models.graph_task:GraphClassification")
TASKS.register_lazy("preference", "fedray.models.preference:Preference")
TASKS.register_lazy("instruct_lm", "fedray.models.instruct_task:InstructLM")


def build_task(info: "DataInfo", cfg: "RunConfig") -> Task:
    """The task of a dataset, with the run settings it needs."""
    cls = TASKS.get(info.task)
    from_config = getattr(cls, "from_config", None)
    return from_config(info, cfg) if from_config is not None else cls()


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


def perplexity(loss: float) -> float:
    """exp(mean NLL per token), inf rather than an overflow warning for a huge loss."""
    return math.exp(loss) if loss < 700 else math.inf


_MAX_LOGITS = 2**25
"""Logit elements per evaluation forward pass (128 MiB in float32): a 49k-token
vocabulary must not turn a 1,024-row batch into tens of gigabytes."""


@TASKS.register("causal_lm")
class CausalLM:
    """Next-token cross-entropy over packed rows; padding (id < 0) is never a target.

    Metrics are per target token: `loss` (mean negative log-likelihood),
    `perplexity` (its exp) and `accuracy` (next-token top-1).
    """

    def prepare(self, table: pa.Table, device: torch.device):
        ids, _ = token_arrays(table)
        return torch.tensor(ids, dtype=torch.long, device=device)

    def num_examples(self, data) -> int:
        return int(data.shape[0])

    def batches(self, data, batch_size: int, generator: torch.Generator):
        order = torch.randperm(len(data), generator=generator).to(data.device)
        for start in range(0, len(data), batch_size):
            yield data[order[start : start + batch_size]]

    def loss(self, model, batch) -> torch.Tensor:
        return masked_lm_loss(model, batch, batch >= 0)

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict[str, float]:
        nll, correct, count = (t.sum().item() for t in self.row_scores(model, data, batch_size))
        loss = nll / max(1, count)
        return {"loss": loss, "accuracy": correct / max(1, count), "perplexity": perplexity(loss)}

    @torch.no_grad()
    def row_scores(self, model, data, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row: summed NLL, correctly predicted tokens, target tokens (float64, CPU)."""
        return masked_row_scores(model, data, data >= 0, batch_size)


def trim_right_padding(ids: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`ids` and the tensors `aligned` with it cut after the batch's last real token.

    Rows are right-padded to `data.seq_len` (padding id < 0), and with a causal model
    what follows a row's last token changes nothing before it, so the columns where
    every row is padding are pure cost: instruction rows fill about 60 of 160 columns.
    """
    real = (ids >= 0).any(0)
    width = int(real.nonzero().max()) + 1 if bool(real.any()) else 1
    if width == ids.shape[1]:
        return (ids, *aligned)
    return (ids[:, :width], *(t[:, :width] for t in aligned))


def masked_lm_loss(model, ids: torch.Tensor, loss_mask: torch.Tensor,
                   position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token loss over the tokens where `loss_mask` is True (their prediction
    from the token before). Padding (id < 0) is never attended to; right padding keeps
    every row's positions counting from 0, and columns of padding alone are cut
    (`trim_right_padding`). With `position_ids` (packed rows, `fedray.data.packing`) no
    2D mask is passed: transformers reads each restart of the positions as a sequence
    boundary and masks attention across it."""
    if position_ids is None:
        ids, loss_mask = trim_right_padding(ids, loss_mask)
    else:
        ids, loss_mask, position_ids = trim_right_padding(ids, loss_mask, position_ids)
    labels = ids.masked_fill(~loss_mask, -100)
    if position_ids is not None:
        return model(input_ids=ids.clamp_min(0), position_ids=position_ids, labels=labels, use_cache=False).loss
    return model(input_ids=ids.clamp_min(0), attention_mask=ids >= 0, labels=labels, use_cache=False).loss


@torch.no_grad()
def masked_row_scores(model, ids: torch.Tensor, loss_mask: torch.Tensor,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: summed NLL, correctly predicted tokens and target tokens (float64, CPU),
    over the tokens where `loss_mask` is True."""
    vocab = model.get_output_embeddings().weight.shape[0]
    rows = max(1, min(batch_size, _MAX_LOGITS // (ids.shape[1] * vocab)))
    out = []
    for start in range(0, len(ids), rows):
        batch, mask = trim_right_padding(ids[start : start + rows], loss_mask[start : start + rows])
        logits = model(input_ids=batch.clamp_min(0), attention_mask=batch >= 0, use_cache=False).logits
        logits, targets, valid = logits[:, :-1].float(), batch[:, 1:], mask[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
        hits = (logits.argmax(dim=-1) == targets) & valid
        out.append(torch.stack([(nll * valid).sum(1), hits.sum(1), valid.sum(1)]).double().cpu())
    scores = torch.cat(out, dim=1)
    return scores[0], scores[1], scores[2]
