"""The `train` section: the clients' local training (optimizer, steps, precision,
local DP-SGD, objective)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Optional

from fedray.config.finetune import Objective


class Optimizer(enum.Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class Precision(enum.Enum):
    """Autocast during local training."""

    auto = "auto"
    """bfloat16 on a CUDA device that supports it, float16 on one that does not, off on CPU."""
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"
    """float16 autocast with a gradient scaler (CUDA only)."""


@dataclasses.dataclass
class DPSGDConfig:
    """Local DP-SGD (Abadi et al. 2016) through Opacus: every example's gradient is
    clipped, Gaussian noise is added to each step's sum, and minibatches are Poisson
    samples (each example joins with probability batch_size / examples), which is what
    the accountant assumes. Only trainable parameters are privatised (LoRA adapters)."""

    noise_multiplier: float = 1.0
    """Noise std over `max_grad_norm` per step; 0 clips without noise (epsilon infinite)."""
    max_grad_norm: float = 1.0
    """Per-example gradient L2 bound C."""
    delta: float = 1e-5
    """The delta at which each client's epsilon is reported (clients.parquet `dp_epsilon`)."""

    def errors(self) -> list[str]:
        out = []
        if self.noise_multiplier < 0:
            out.append(f"train.dp.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            out.append(f"train.dp.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            out.append(f"train.dp.delta must be in (0, 1), got {self.delta}")
        return out


@dataclasses.dataclass
class TrainConfig:
    local_epochs: int = 1
    """Local passes over the client's shard per round."""
    local_steps: Optional[int] = None
    """If set, train exactly this many minibatch steps instead of `local_epochs`."""
    batch_size: int = 32
    """Minibatch size of local training."""
    optimizer: Optimizer = Optimizer.sgd
    """The clients' local optimizer."""
    lr: float = 0.05
    """Local learning rate."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """Weight decay of the local optimizer."""
    persist_optimizer_state: bool = False
    """Keep each client's optimizer state between its rounds (stored per client id)."""
    grad_accum_steps: int = 1
    """Minibatches whose gradients are summed per optimizer step (`local_steps`
    counts optimizer steps)."""
    mixed_precision: Precision = Precision.auto
    """Autocast of the forward pass: `auto` uses it where the device supports it."""
    max_grad_norm: Optional[float] = None
    """Clip each step's gradient to this global norm; null: no clipping."""
    dp: Optional[DPSGDConfig] = None
    """Local DP-SGD on every client; null: off."""
    objective: Objective = Objective.task
    """`task` (the dataset's loss) or `dpo` (needs `data.dataset: preferences`, `model.peft`)."""
    beta: float = 0.1
    """DPO's beta: how far the policy may move from the reference (the KL weight)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them
    (`hf_causal_lm` only): less memory for long sequences, about a third more compute."""

    def errors(self) -> list[str]:
        out = [] if self.dp is None else self.dp.errors()
        if not self.beta > 0:
            out.append(f"train.beta must be > 0, got {self.beta}")
        if self.grad_accum_steps < 1:
            out.append(f"train.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            out.append(f"train.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.local_epochs < 1:
            out.append(f"train.local_epochs must be >= 1, got {self.local_epochs}")
        if self.local_steps is not None and self.local_steps < 1:
            out.append(f"train.local_steps must be >= 1 or null, got {self.local_steps}")
        if self.batch_size < 1:
            out.append(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            out.append(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            out.append(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            out.append(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        return out
