"""The `preference` task: pairs of completions to one prompt, trained with DPO or on the
chosen completion alone, and scored by which completion the model prefers.

DPO (Rafailov et al., 2023) minimises -log sigmoid(beta * (log pi(y_w|x)/ref(y_w|x) -
log pi(y_l|x)/ref(y_l|x))), log-probabilities summed over completion tokens. The
reference is the frozen base with the LoRA adapters switched off (PEFT's
`disable_adapter`), so no second model is held in memory; with `train.objective:
task` the loss is the chosen completion's mean token NLL (supervised fine-tuning).

Metrics on held-out pairs: `accuracy` (the model's log-probability of the chosen
completion above the rejected one's), `reward_accuracy` and `reward_margin` (DPO's
implicit rewards beta * log pi/ref: their ordering and mean difference; 0 before
training, when policy and reference agree) and `loss` (the DPO loss).
"""

from __future__ import annotations

import contextlib

import pyarrow as pa
import torch
import torch.nn.functional as F

from fedray.config.finetune import Objective
from fedray.data.preferences import pair_arrays


def sequence_logps(logits: torch.Tensor, ids: torch.Tensor, prompt_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of its completion tokens (positions from
    `prompt_len` on, PAD excluded) and how many there are. `logits` [rows, L, vocab]
    predict `ids` shifted by one."""
    targets = ids[:, 1:]
    positions = torch.arange(1, ids.shape[1], device=ids.device)
    mask = (targets >= 0) & (positions[None, :] >= prompt_len[:, None])
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = logps.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (token * mask).sum(1), mask.sum(1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    """DPO's per-pair loss (the sigmoid form) from sequence log-probabilities."""
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))


def reference(model: torch.nn.Module):
    """The frozen base: a context with the adapters off (a model without any: itself)."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if disable is not None else contextlib.nullcontext()


class Preference:
    """Pairs `(chosen, rejected, prompt_len)`; see the module docstring."""

    eval_columns = ("reward_accuracy", "reward_margin")
    """Evaluation figures recorded beside `loss` and `accuracy` (metrics.parquet `eval_*`)."""

    def __init__(self, objective: Objective = Objective.dpo, beta: float = 0.1):
        self.objective, self.beta = objective, beta

    @classmethod
    def from_config(cls, info, cfg) -> "Preference":
        return cls(cfg.train.objective, cfg.train.beta)

    def prepare(self, table: pa.Table, device: torch.device):
        chosen, rejected, prompt_len = pair_arrays(table)
        return tuple(torch.tensor(a, dtype=torch.long, device=device) for a in (chosen, rejected, prompt_len))

    def num_examples(self, data) -> int:
        return int(data[0].shape[0])

    def batches(self, data, batch_size: int, generator: torch.Generator):
        order = torch.randperm(self.num_examples(data), generator=generator).to(data[0].device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield tuple(part[idx] for part in data)

    def logps(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chosen, rejected) summed completion log-probabilities, one forward pass for
        both, and the chosen completions' token counts."""
        chosen, rejected, prompt_len = batch
        ids = torch.cat([chosen, rejected])
        logits = model(input_ids=ids.clamp_min(0), attention_mask=ids >= 0, use_cache=False).logits
        summed, counts = sequence_logps(logits, ids, torch.cat([prompt_len, prompt_len]))
        return *summed.chunk(2), counts[: len(chosen)]

    def loss(self, model, batch) -> torch.Tensor:
        chosen, rejected, counts = self.logps(model, batch)
        if self.objective is Objective.task:  # supervised: the chosen completion's mean token NLL
            return -chosen.sum() / counts.sum().clamp_min(1)
        with torch.no_grad(), reference(model):
            ref_chosen, ref_rejected, _ = self.logps(model, batch)
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta).mean()

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict[str, float]:
        rows = [self.scores(model, tuple(p[s : s + batch_size] for p in data))
                for s in range(0, self.num_examples(data), batch_size)]
        chosen, rejected, ref_chosen, ref_rejected = (torch.cat(c) for c in zip(*rows))
        return preference_metrics(chosen, rejected, ref_chosen, ref_rejected, self.beta)

    def scores(self, model, batch) -> tuple[torch.Tensor, ...]:
        """Policy and reference log-probabilities of a batch's chosen and rejected completions."""
        chosen, rejected, _ = self.logps(model, batch)
        with reference(model):
            ref_chosen, ref_rejected, _ = self.logps(model, batch)
        return chosen.cpu(), rejected.cpu(), ref_chosen.cpu(), ref_rejected.cpu()


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                       ref_rejected: torch.Tensor, beta: float) -> dict[str, float]:
    """Held-out figures of a model from its pairs' sequence log-probabilities (module docstring)."""
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return {
        "loss": float(dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta).mean()),
        "accuracy": float((chosen > rejected).double().mean()),
        "reward_accuracy": float((margin > 0).double().mean()),
        "reward_margin": float(margin.double().mean()),
    }
