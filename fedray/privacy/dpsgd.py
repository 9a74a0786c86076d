"""Local DP-SGD (Abadi et al., CCS 2016) through Opacus, for the clients' training loop.

Opacus's `GradSampleModule` computes every example's gradient of the trainable
parameters (frozen base weights, e.g. under LoRA, are neither clipped nor
noised) and its `DPOptimizer` clips each to `max_grad_norm`, sums them, adds
N(0, (z C)^2) and divides by the expected batch size. Minibatches are Poisson
samples drawn from the client's seeded generator (each example joins a step
with probability q = batch_size / examples), so the steps are exactly the
sampled Gaussian mechanism that Opacus's RDP accountant analyses; the noise
comes from a generator seeded per (round, client) as well, so runs repeat.

A client's account (every round's noise multiplier, sampling rate and steps)
is part of its kept state, so its epsilon accumulates over all its rounds,
survives checkpoints, and is reported per client in clients.parquet.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from fedray.config.schema import DPSGDConfig


class Account(NamedTuple):
    """One client's DP-SGD history: (noise multiplier, sampling rate, steps) per setting."""

    history: tuple[tuple[float, float, int], ...] = ()
    epsilon: float = 0.0
    """Cumulative epsilon at the configured delta."""


def private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: DPSGDConfig, batch_size: int,
            generator: torch.Generator):
    """(per-example-gradient module, DP optimizer) around `model` and `optimizer`. Call
    `release(module)` afterwards: the module's hooks live on `model`'s submodules."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    module = GradSampleModule(model, loss_reduction="mean")
    dp_optimizer = DPOptimizer(optimizer, noise_multiplier=cfg.noise_multiplier, max_grad_norm=cfg.max_grad_norm,
                               expected_batch_size=batch_size, loss_reduction="mean", generator=generator)
    return module, dp_optimizer


def release(module) -> None:
    """Take Opacus's hooks off the model, so the actor's next client trains a plain model."""
    module.remove_hooks()
    for p in module.parameters():
        p.grad_sample = None


def poisson_batches(full: Any, num_examples: int, batch_size: int, steps: int,
                    generator: torch.Generator) -> Iterator[Any]:
    """`steps` minibatches, each holding every example independently with probability
    batch_size / num_examples. `full` is the whole shard as one batch of the task's
    structure (a tensor, or a tuple of tensors with examples first)."""
    rate = min(1.0, batch_size / num_examples)
    for _ in range(steps):
        keep = torch.rand(num_examples, generator=generator) < rate
        yield torch.utils._pytree.tree_map(lambda t: t[keep.to(t.device)], full), int(keep.sum())


def noise_only_step(optimizer, params: list[torch.nn.Parameter]) -> None:
    """A step on an empty Poisson sample: no gradient, only the noise (skipping it would
    tell that the sample was empty)."""
    for p in params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    optimizer.step()


def account(previous: Account | None, cfg: DPSGDConfig, rate: float, steps: int) -> Account:
    """The account after one more round of `steps` steps at sampling rate `rate`."""
    history = list(previous.history) if previous is not None else []
    if history and history[-1][:2] == (cfg.noise_multiplier, rate):
        history[-1] = (cfg.noise_multiplier, rate, history[-1][2] + steps)
    else:
        history.append((cfg.noise_multiplier, rate, steps))
    return Account(tuple(history), epsilon_of(tuple(history), cfg.delta))


def epsilon_of(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Opacus's RDP bound for a client's whole history."""
    import logging

    from opacus.accountants import RDPAccountant

    if any(z <= 0 for z, _, steps in history if steps):
        return float("inf")
    logging.getLogger("opacus").setLevel(logging.ERROR)
    accountant = RDPAccountant()
    accountant.history = [entry for entry in history if entry[2]]
    return float(accountant.get_epsilon(delta)) if accountant.history else 0.0


def epsilon_column(client_refs: dict, num_clients: int) -> dict[str, np.ndarray]:
    """clients.parquet's `dp_epsilon`: each client's cumulative DP-SGD epsilon as of its
    current state (`fedray.types.StateRef.dp_epsilon`, as the client reported it; NaN if
    it never trained)."""
    column = np.full(num_clients, np.nan)
    for cid, ref in client_refs.items():
        if ref.dp_epsilon is not None:
            column[cid] = ref.dp_epsilon
    return {"dp_epsilon": column}
