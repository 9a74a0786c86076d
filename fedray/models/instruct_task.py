"""The `instruct_lm` task: response-only causal-LM loss, evaluated by generating answers.

Rows come from `fedray.data.instructions` (prompt, response, PAD; a loss mask on
the response). Training minimises the next-token loss over response tokens only.
Evaluation reports that loss (`loss`, `perplexity`, `token_accuracy`) and, for the
first `data.instruct.eval_examples` held-out prompts, greedily generated answers
scored by exact match or the task's verifier: `accuracy` is their mean, and
`acc/<task>` the mean per task (owner: a file, a reasoning-gym family).

With `data.instruct.packing`, training batches are packed rows
(`fedray.data.packing`): a batch is `batch_size` packed rows, each holding several
conversations with their own position ids. Evaluation and generation always use
the padded rows, and `num_examples` counts conversations (what FedAvg weighs).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from fedray.data.arrow import matrix_values
from fedray.data.packing import pack_rows
from fedray.models.generate import greedy_generate
from fedray.models.tasks import masked_lm_loss, masked_row_scores, perplexity

if TYPE_CHECKING:
    from fedray.config.schema import RunConfig
    from fedray.data.datasets import DataInfo


@dataclasses.dataclass
class InstructData:
    """A prepared shard: token rows and mask on the device, prompts and answers on the host."""

    ids: torch.Tensor
    """long [rows, seq_len]; PAD (-1) after the response."""
    loss_mask: torch.Tensor
    """bool [rows, seq_len]: the response tokens."""
    prompts: list[np.ndarray]
    tasks: list[str]
    references: list[str]
    entries: list[str]
    packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """(ids, loss mask, position ids) of the conversations packed into rows, when packing."""


def normalise(text: str) -> str:
    """What exact match compares: the answer without surrounding whitespace, case-folded."""
    return " ".join(text.split()).casefold()


def score_answer(answer: str, reference: str, entry: str) -> float:
    """1.0 for a correct answer: the reasoning-gym verifier where there is an entry
    (it may give partial credit), else exact match after `normalise`."""
    if entry:
        from fedray.data.reasoning import verify

        return verify(answer, entry)
    return float(normalise(answer) == normalise(reference))


class InstructLM:
    """Response-only loss; accuracy of generated answers (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_new_tokens: int = 32, eval_examples: int = 64, eval_batch_size: int = 16,
                 packing: bool = False):
        self.tokenizer, self.packing = tokenizer, packing
        self.max_new_tokens, self.eval_examples, self.eval_batch_size = max_new_tokens, eval_examples, eval_batch_size

    @classmethod
    def from_config(cls, info: "DataInfo", cfg: "RunConfig") -> "InstructLM":
        from fedray.data.tokenize import TOKENIZERS

        ins = cfg.data.instruct
        return cls(TOKENIZERS.build(cfg.data.tokenizer, cfg.model), ins.max_new_tokens, ins.eval_examples,
                   ins.eval_batch_size, ins.packing)

    def prepare(self, table: pa.Table, device: torch.device) -> InstructData:
        ids = torch.tensor(matrix_values(table, "input_ids"), dtype=torch.long, device=device)
        mask = torch.tensor(matrix_values(table, "loss_mask"), dtype=torch.bool, device=device)
        prompt_len = table.column("prompt_len").to_numpy()
        host = ids.cpu().numpy()
        prompts = [host[i, :n].astype(np.int64) for i, n in enumerate(prompt_len)]
        strings = [table.column(k).to_pylist() for k in ("task", "reference", "entry")]
        packed = None
        if self.packing:
            rows = pack_rows(host, mask.cpu().numpy())
            packed = tuple(torch.as_tensor(a, device=device) for a in (rows.ids, rows.loss_mask, rows.position_ids))
        return InstructData(ids, mask, prompts, *strings, packed=packed)

    def num_examples(self, data: InstructData) -> int:
        return int(data.ids.shape[0])

    def batches(self, data: InstructData, batch_size: int, generator: torch.Generator):
        rows = data.packed or (data.ids, data.loss_mask)
        order = torch.randperm(len(rows[0]), generator=generator).to(data.ids.device)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield tuple(t[idx] for t in rows)

    def loss(self, model, batch) -> torch.Tensor:
        """Padded rows (ids, mask) or packed ones (ids, mask, position ids)."""
        return masked_lm_loss(model, *batch)

    def columns(self, data: InstructData) -> tuple[str, ...]:
        """The per-task accuracy columns evaluation reports (one per task in `data`)."""
        return tuple(f"acc/{t}" for t in sorted(set(data.tasks))) if self.eval_examples else ()

    @torch.no_grad()
    def evaluate(self, model, data: InstructData, batch_size: int) -> dict[str, float]:
        nll, hits, count = (t.sum().item() for t in masked_row_scores(model, data.ids, data.loss_mask, batch_size))
        loss = nll / max(1, count)
        metrics = {"loss": loss, "perplexity": perplexity(loss), "token_accuracy": hits / max(1, count)}
        metrics["accuracy"] = metrics["token_accuracy"]
        if self.eval_examples:
            metrics.update(self.generation_scores(model, data))
        return metrics

    def generation_scores(self, model, data: InstructData) -> dict[str, float]:
        """`accuracy` over the evaluated prompts and `acc/<task>` per task; prompts are
        taken per task in turn so that every task is represented."""
        rows = _round_robin(data.tasks, self.eval_examples)
        answers = greedy_generate(model, [data.prompts[i] for i in rows], self.max_new_tokens,
                                  self.tokenizer.eos_id, self.eval_batch_size)
        scores = np.array([score_answer(self.tokenizer.decode(a).strip(), data.references[i], data.entries[i])
                           for i, a in zip(rows, answers)])
        tasks = np.array([data.tasks[i] for i in rows])
        out = {"accuracy": float(scores.mean())}
        out.update({f"acc/{t}": float(scores[tasks == t].mean()) if (tasks == t).any() else float("nan")
                    for t in sorted(set(data.tasks))})
        return out


def _round_robin(tasks: list[str], limit: int) -> list[int]:
    """Up to `limit` row indices: the first row of each task, then the second, ..."""
    per_task: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        per_task.setdefault(t, []).append(i)
    queues = [per_task[t] for t in sorted(per_task)]
    order = [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]
    return sorted(order[:limit])

