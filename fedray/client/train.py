"""The local training loop a client runs each round."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable

import torch

from fedray.config.schema import Optimizer, Precision, TrainConfig
from fedray.models.tasks import Task


@dataclasses.dataclass(frozen=True)
class LocalTrainResult:
    loss: float
    """Mean training loss over the minibatches of this round."""
    loss_sq: float
    """Mean squared training loss over the minibatches: Oort's statistical utility is
    |B| x sqrt(mean loss^2), with each minibatch's mean loss standing in for its samples'."""
    num_examples: int
    steps: int
    """Optimizer steps (each sums `grad_accum_steps` minibatches)."""
    optimizer_state: dict[str, Any] | None
    sample_rate: float = 0.0
    """DP-SGD: each example's probability of joining a step (0 without `train.dp`)."""


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer is Optimizer.sgd:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer is Optimizer.adam:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for this device, or None to run in the weights' dtype."""
    if precision is Precision.off or (precision is Precision.auto and device.type != "cuda"):
        return None
    if precision is Precision.auto:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision is Precision.fp16 and device.type != "cuda":
        raise ValueError(f"train.mixed_precision=fp16 needs a CUDA device, this client runs on {device}")
    return torch.bfloat16 if precision is Precision.bf16 else torch.float16


def train_local(
    model: torch.nn.Module,
    task: Task,
    data: Any,
    cfg: TrainConfig,
    seed: int,
    optimizer_state: dict[str, Any] | None = None,
    regularizer: Callable[[torch.nn.Module, torch.Generator], torch.Tensor] | None = None,
) -> LocalTrainResult:
    """`local_epochs` shuffled passes (or exactly `local_steps` optimizer steps).

    `regularizer(model, generator)` is added to every minibatch's objective (e.g. the
    distillation term towards the server's foundation model); the reported loss is
    the task's alone.

    Each optimizer step sums the gradients of `grad_accum_steps` minibatches; a
    remainder at the end of training makes one last, smaller step. Shuffling uses
    its own generator seeded per (round, client), so the result does not depend on
    which actor ran the client or in which order.
    """
    if task.num_examples(data) == 0:
        raise ValueError("the client has no training examples")
    if cfg.dp is not None:
        return train_private(model, task, data, cfg, seed, optimizer_state)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    generator = torch.Generator().manual_seed(seed)
    device = params[0].device
    dtype = autocast_dtype(cfg.mixed_precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    accum = cfg.grad_accum_steps

    def step() -> None:
        scaler.unscale_(optimizer)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    # ---- the loop --------------------------------------------------------
    total_loss, total_sq, steps, micro = torch.zeros(()), torch.zeros(()), 0, 0
    max_steps = cfg.local_steps
    epoch = 0
    optimizer.zero_grad(set_to_none=True)
    while (max_steps is None and epoch < cfg.local_epochs) or (max_steps is not None and steps < max_steps):
        for batch in task.batches(data, cfg.batch_size, generator):
            with autocast:
                loss = task.loss(model, batch)
                objective = loss if regularizer is None else loss + regularizer(model, generator)
            scaler.scale(objective / accum if accum > 1 else objective).backward()
            detached = loss.detach().float().to("cpu")
            total_loss += detached
            total_sq += detached * detached
            micro += 1
            if micro % accum == 0:
                step()
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
        epoch += 1
    if micro % accum:
        step()
        steps += 1

    state = optimizer.state_dict() if cfg.persist_optimizer_state else None
    return LocalTrainResult(
        loss=float(total_loss) / max(1, micro),
        loss_sq=float(total_sq) / max(1, micro),
        num_examples=task.num_examples(data),
        steps=steps,
        optimizer_state=state,
    )


def train_private(model: torch.nn.Module, task: Task, data: Any, cfg: TrainConfig, seed: int,
                  optimizer_state: dict[str, Any] | None = None) -> LocalTrainResult:
    """Local DP-SGD (`train.dp`, `fedray.privacy.dpsgd`): Poisson-sampled minibatches
    from the seeded generator, per-example clipping and Gaussian noise through Opacus.
    An epoch is num_examples / batch_size steps, the expected number to see each
    example once; `local_steps` overrides it as usual."""
    from fedray.privacy.dpsgd import noise_only_step, poisson_batches, private, release

    n = task.num_examples(data)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=params[0].device).manual_seed(seed ^ 0x5EED_D9)
    module, dp_optimizer = private(model, optimizer, cfg.dp, cfg.batch_size, noise)
    steps = cfg.local_steps or cfg.local_epochs * max(1, round(n / cfg.batch_size))
    full = next(iter(task.batches(data, n, generator)))  # the shard as one batch; samples come from it
    total_loss, total_sq, batches = 0.0, 0.0, 0
    with warnings.catch_warnings():
        # Opacus hooks on a model whose inputs need no gradient (LoRA over a frozen base) warn every step
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        try:
            dp_optimizer.zero_grad(set_to_none=True)
            for batch, size in poisson_batches(full, n, cfg.batch_size, steps, generator):
                if size == 0:
                    noise_only_step(dp_optimizer, params)
                else:
                    loss = task.loss(module, batch)
                    loss.backward()
                    dp_optimizer.step()
                    value = float(loss.detach())
                    total_loss, total_sq, batches = total_loss + value, total_sq + value * value, batches + 1
                dp_optimizer.zero_grad(set_to_none=True)
        finally:
            release(module)
    return LocalTrainResult(
        loss=total_loss / max(1, batches),
        loss_sq=total_sq / max(1, batches),
        num_examples=n,
        steps=steps,
        optimizer_state=optimizer.state_dict() if cfg.persist_optimizer_state else None,
        sample_rate=min(1.0, cfg.batch_size / n),
    )
