"""The local training loop a client runs each round."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from fedray.config.schema import Optimizer, TrainConfig
from fedray.models.tasks import Task


@dataclasses.dataclass(frozen=True)
class LocalTrainResult:
    loss: float
    """Mean training loss over the steps of this round."""
    loss_sq: float
    """Mean squared training loss over the steps: Oort's statistical utility is
    |B| x sqrt(mean loss^2), with each step's mean loss standing in for its samples'."""
    num_examples: int
    steps: int
    optimizer_state: dict[str, Any] | None


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer is Optimizer.sgd:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer is Optimizer.adam:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_local(
    model: torch.nn.Module,
    task: Task,
    data: Any,
    cfg: TrainConfig,
    seed: int,
    optimizer_state: dict[str, Any] | None = None,
    regularizer: Callable[[torch.nn.Module, torch.Generator], torch.Tensor] | None = None,
) -> LocalTrainResult:
    """`local_epochs` shuffled passes (or exactly `local_steps` minibatches).

    `regularizer(model, generator)` is added to every step's objective (e.g. the
    distillation term towards the server's foundation model); the reported loss
    is the task's alone.

    Shuffling uses its own generator seeded per (round, client), so the result
    does not depend on which actor ran the client or in which order.
    """
    if task.num_examples(data) == 0:
        raise ValueError("the client has no training examples")
    model.train()
    optimizer = build_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    generator = torch.Generator().manual_seed(seed)

    # ---- the loop --------------------------------------------------------
    total_loss, total_sq, steps = torch.zeros(()), torch.zeros(()), 0
    max_steps = cfg.local_steps
    epoch = 0
    while (max_steps is None and epoch < cfg.local_epochs) or (max_steps is not None and steps < max_steps):
        for batch in task.batches(data, cfg.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(model, batch)
            objective = loss if regularizer is None else loss + regularizer(model, generator)
            objective.backward()
            optimizer.step()
            detached = loss.detach().to("cpu")
            total_loss += detached
            total_sq += detached * detached
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        epoch += 1

    state = optimizer.state_dict() if cfg.persist_optimizer_state else None
    return LocalTrainResult(
        loss=float(total_loss) / max(1, steps),
        loss_sq=float(total_sq) / max(1, steps),
        num_examples=task.num_examples(data),
        steps=steps,
        optimizer_state=state,
    )
