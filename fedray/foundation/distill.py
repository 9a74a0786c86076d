"""Knowledge-distillation losses and the compact logits that travel for them.

Teacher logits travel as their top-k (values and indices) to keep payloads
small; the student is matched on that support: KL(p_T || q_S) at temperature T,
with both distributions renormalised over the teacher's k entries (Hinton et
al. 2015, scaled by T^2 so gradients keep their size across temperatures).
For causal LMs a position is a (sequence, token) pair, and only positions that
hold a real token count (the mask of `fedray.foundation.public`).

The client side of knowledge transfer is three functions that a client actor
calls: `public_tensor` (once), `kd_regularizer` (its local objective's extra
term) and `public_logits` (what it sends back).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.foundation.public import public_task

LOSSES: Registry = Registry("distillation loss")


class TopK(NamedTuple):
    """The k largest logits per position: values float32[..., k], indices int64[..., k]."""

    values: np.ndarray
    indices: np.ndarray

    @property
    def num_bytes(self) -> int:
        return int(self.values.nbytes + self.indices.nbytes)


def top_k(logits: np.ndarray, k: int) -> TopK:
    """Keep the k largest logits of the last axis (all of them if k >= its size)."""
    k = min(k, logits.shape[-1])
    idx = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(logits, idx, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return TopK(np.take_along_axis(vals, order, -1).astype(np.float32),
                np.take_along_axis(idx, order, -1).astype(np.int64))


def kd_terms(student_logits: Any, teacher: TopK, temperature: float) -> Any:
    """Per position: KL(teacher || student) over the teacher's top-k support, times T^2 (torch)."""
    import torch

    values = torch.as_tensor(teacher.values, device=student_logits.device)
    indices = torch.as_tensor(teacher.indices, device=student_logits.device)
    t = float(temperature)
    log_p = torch.log_softmax(values.float() / t, dim=-1)
    picked = torch.gather(student_logits.float(), -1, indices) / t
    log_q = picked - torch.logsumexp(picked, dim=-1, keepdim=True)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * (t * t)


def kd_loss(student_logits: Any, teacher: TopK, temperature: float, mask: Any = None) -> Any:
    """The mean of `kd_terms` over the positions where `mask` is true (all if None)."""
    kl = kd_terms(student_logits, teacher, temperature)
    if mask is None:
        return kl.mean()
    weights = mask.to(kl.dtype)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0)


def aggregate_top_k(teachers: list[TopK], weights: list[float], k: int, temperature: float) -> TopK:
    """Weighted mean of several teachers' tempered distributions, kept as top-k logits.

    Supports may differ between teachers: probabilities are summed per
    (position, index) over the union of supports, then the k largest are kept and
    returned as logits (log-probabilities times T) so `kd_loss` can consume them.
    """
    assert teachers and len(teachers) == len(weights)
    shape = teachers[0].values.shape[:-1]
    positions = int(np.prod(shape, dtype=np.int64))
    total = float(sum(weights))
    keys, mass = [], []
    for teacher, weight in zip(teachers, weights):
        values = teacher.values.reshape(positions, -1).astype(np.float64) / temperature
        probs = np.exp(values - values.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        pos = np.repeat(np.arange(positions), values.shape[1])
        keys.append(np.stack([pos, teacher.indices.reshape(positions, -1).ravel()], 1))
        mass.append(probs.ravel() * (weight / total))
    keys_all, mass_all = np.concatenate(keys), np.concatenate(mass)
    uniq, inverse = np.unique(keys_all, axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=mass_all)
    # per position, the k entries with most mass
    order = np.lexsort((-summed, uniq[:, 0]))
    uniq, summed = uniq[order], summed[order]
    starts = np.searchsorted(uniq[:, 0], np.arange(positions))
    rank = np.arange(len(uniq)) - starts[uniq[:, 0]]
    keep = rank < k
    counts = np.bincount(uniq[keep, 0], minlength=positions)
    assert (counts == counts[0]).all(), "every position needs at least k candidates"
    kk = int(counts[0])
    indices = uniq[keep, 1].reshape(positions, kk)
    logits = (np.log(np.maximum(summed[keep], 1e-30)) * temperature).reshape(positions, kk)
    return TopK(logits.reshape(*shape, kk).astype(np.float32), indices.reshape(*shape, kk))


@dataclasses.dataclass(frozen=True)
class Teaching:
    """What knowledge transfer broadcasts to the clients in one round (one `ray.put`)."""

    teacher: TopK | None
    """The foundation model's top-k logits on the public set (server -> clients)."""
    public: np.ndarray | None = None
    """The public inputs themselves, when a generated set is refreshed during the run
    (clients hold the first set from their start)."""

    @property
    def num_bytes(self) -> int:
        return (0 if self.teacher is None else self.teacher.num_bytes) + (
            0 if self.public is None else int(self.public.nbytes))


# ---- the client side --------------------------------------------------------------
_MAX_LOGITS = 2**25
"""Logit elements per forward pass over the public set (128 MiB in float32)."""


def public_tensor(task: str, inputs: np.ndarray, device: Any) -> Any:
    """The public inputs (an array from the server) as `task`'s model takes them."""
    return public_task(task).tensor(inputs, device)


def kd_regularizer(task: str, public_data: Any, teacher: TopK, weight: float, temperature: float,
                   batch_size: int):
    """A `train_local` regularizer: weight x KD loss towards `teacher` on a random
    minibatch of `public_data` (from `public_tensor`) each step, on the positions
    that count for `task`."""
    import torch

    view = public_task(task)
    values = torch.as_tensor(teacher.values, device=public_data.device)
    indices = torch.as_tensor(teacher.indices, device=public_data.device)
    size = min(batch_size, len(public_data))

    def term(model: Any, generator: Any) -> Any:
        pick = torch.randint(len(public_data), (size,), generator=generator).to(public_data.device)
        logits, mask = view.forward(model, public_data[pick])
        return weight * kd_loss(logits, TopK(values[pick], indices[pick]), temperature, mask)

    return term


def public_logits(model: Any, task: str, public_data: Any, top_k: int) -> TopK:
    """`model`'s top-k logits on every public input (clients -> server), computed in
    chunks so that a large vocabulary never materialises all logits at once."""
    import torch

    view = public_task(task)
    was_training = model.training
    model.eval()
    values, indices = [], []
    with torch.no_grad():
        first, _ = view.forward(model, public_data[:1])
        rows = max(1, _MAX_LOGITS // first.numel())
        for start in range(0, len(public_data), rows):
            logits, _ = view.forward(model, public_data[start:start + rows])
            kept = torch.topk(logits.float(), min(top_k, logits.shape[-1]), dim=-1)
            values.append(kept.values.cpu().numpy())
            indices.append(kept.indices.cpu().numpy())
    model.train(was_training)
    return TopK(np.concatenate(values).astype(np.float32), np.concatenate(indices).astype(np.int64))


# ---- the foundation model's losses (run by the ZeRO ranks) -----------------------
@LOSSES.register("distill")
def distill(engine: Any, batch: dict, task: str = "classification", temperature: float = 2.0) -> Any:
    """The engine (student) matches the teacher's top-k on `batch["inputs"]`."""
    logits, mask = public_task(task).forward(engine, batch["inputs"])
    return kd_loss(logits, TopK(batch["teacher_values"], batch["teacher_indices"]), temperature, mask)


@LOSSES.register("supervised")
def supervised(engine: Any, batch: dict, task: str = "classification") -> Any:
    """The task's own loss on labelled public rows (`inputs`, and `labels` for classes):
    the warm-up that makes the foundation model a teacher."""
    return public_task(task).supervised_loss(engine, batch)
