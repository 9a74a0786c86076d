"""Knowledge-distillation losses and the compact distributions that travel for them.

A distribution travels as its top-k: the log-probabilities, at the distillation
temperature T, of its k most likely entries (classes, or next tokens) and their
indices. The student is matched on that support, KL(p_T || q_S) scaled by T^2 so
gradients keep their size across temperatures (Hinton et al. 2015), in one of
two ways (`server.distill.rest_mass`): with both distributions renormalised over
the teacher's k entries (the student learns how the teacher ranks its likely
tokens), or with what the k entries leave over as one more outcome, "anything
else" (the student also moves its total mass onto them). Both are the exact KL
when k covers every output. For causal LMs a position is a (sequence, token)
pair, and only positions that hold a real token count (the mask of
`fedray.foundation.public`).

The client side of knowledge transfer is three functions that a client actor
calls: `public_tensor` (once), `kd_regularizer` (its local objective's extra
term) and `public_logits` (what it sends back).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.foundation.public import public_task

LOSSES: Registry = Registry("distillation loss")

_TINY = 1e-12
"""Floor of a remaining mass before its logarithm."""


class TopK(NamedTuple):
    """The k most likely entries per position: log-probabilities at temperature T,
    float32[..., k], in decreasing order, and their indices, int64[..., k]."""

    values: np.ndarray
    indices: np.ndarray

    @property
    def num_bytes(self) -> int:
        return int(self.values.nbytes + self.indices.nbytes)


def top_k(logits: np.ndarray, k: int, temperature: float) -> TopK:
    """The k most likely entries of softmax(logits / T) over the last axis (all if k >= its size)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    k = min(k, log_p.shape[-1])
    idx = np.argpartition(-log_p, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(log_p, idx, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return TopK(np.take_along_axis(vals, order, -1).astype(np.float32),
                np.take_along_axis(idx, order, -1).astype(np.int64))


def top_k_torch(logits: Any, k: int, temperature: float) -> TopK:
    """`top_k` of a torch tensor, on its device (a 49k-token vocabulary never leaves it)."""
    import torch

    log_p = torch.log_softmax(logits.float() / temperature, dim=-1)
    kept = torch.topk(log_p, min(k, log_p.shape[-1]), dim=-1)
    return TopK(kept.values.to("cpu").numpy().astype(np.float32),
                kept.indices.to("cpu").numpy().astype(np.int64))


def kd_terms(student_logits: Any, teacher: TopK, temperature: float, rest_mass: bool = False) -> Any:
    """Per position: KL(teacher || student) at temperature T over the teacher's k entries,
    renormalised, or with the mass they leave as one more outcome; times T^2 (torch)."""
    import torch

    log_p = torch.as_tensor(teacher.values, device=student_logits.device).float().clamp_max(0.0)
    indices = torch.as_tensor(teacher.indices, device=student_logits.device)
    t = float(temperature)
    if not rest_mass:
        log_p = torch.log_softmax(log_p, dim=-1)
        picked = torch.gather(student_logits.float(), -1, indices) / t
        log_q = torch.log_softmax(picked, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1) * (t * t)
    log_q = torch.gather(torch.log_softmax(student_logits.float() / t, dim=-1), -1, indices)
    p = log_p.exp()
    rest_p = (1.0 - p.sum(-1)).clamp_min(0.0)
    rest_q = (1.0 - log_q.exp().sum(-1)).clamp_min(_TINY)
    kl = (p * (log_p - log_q)).sum(-1) + rest_p * (torch.log(rest_p.clamp_min(_TINY)) - torch.log(rest_q))
    return kl * (t * t)


def kd_loss(student_logits: Any, teacher: TopK, temperature: float, mask: Any = None,
            rest_mass: bool = False) -> Any:
    """The mean of `kd_terms` over the positions where `mask` is true (all if None)."""
    kl = kd_terms(student_logits, teacher, temperature, rest_mass)
    if mask is None:
        return kl.mean()
    weights = mask.to(kl.dtype)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0)


def aggregate_top_k(teachers: list[TopK], weights: list[float], k: int) -> TopK:
    """Weighted mean of several teachers' distributions, kept as its k most likely entries.

    Supports may differ between teachers: probabilities are summed per (position,
    index) over the union of supports (an entry outside a teacher's top-k counts
    as 0 for it), then the k entries with most mass are kept as log-probabilities;
    the rest of the mass stays "anything else" for `kd_terms`.
    """
    assert teachers and len(teachers) == len(weights)
    shape = teachers[0].values.shape[:-1]
    positions = int(np.prod(shape, dtype=np.int64))
    total = float(sum(weights))
    keys, mass = [], []
    for teacher, weight in zip(teachers, weights):
        probs = np.exp(teacher.values.reshape(positions, -1).astype(np.float64))
        pos = np.repeat(np.arange(positions), probs.shape[1])
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
    log_p = np.log(np.maximum(summed[keep], _TINY)).reshape(positions, kk)
    return TopK(log_p.reshape(*shape, kk).astype(np.float32), indices.reshape(*shape, kk))


# ---- the client side --------------------------------------------------------------
_MAX_LOGITS = 2**25
"""Logit elements per forward pass over the public set (128 MiB in float32)."""


def public_tensor(task: str, inputs: np.ndarray, device: Any) -> Any:
    """The public inputs (an array from the server) as `task`'s model takes them."""
    return public_task(task).tensor(inputs, device)


def kd_regularizer(task: str, public_data: Any, teacher: TopK, weight: float, temperature: float,
                   batch_size: int, rest_mass: bool = False):
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
        return weight * kd_loss(logits, TopK(values[pick], indices[pick]), temperature, mask, rest_mass)

    return term


def public_logits(model: Any, task: str, public_data: Any, top_k: int, temperature: float) -> TopK:
    """`model`'s top-k distribution at temperature T on every public input (clients ->
    server), computed in chunks so that a large vocabulary never materialises all
    logits at once."""
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
            kept = top_k_torch(logits, top_k, temperature)
            values.append(kept.values)
            indices.append(kept.indices)
    model.train(was_training)
    return TopK(np.concatenate(values), np.concatenate(indices))


# ---- the foundation model's losses (run by the ZeRO ranks) -----------------------
@LOSSES.register("distill")
def distill(engine: Any, batch: dict, task: str = "classification", temperature: float = 2.0,
            rest_mass: bool = False) -> Any:
    """The engine (student) matches the teacher's top-k on `batch["inputs"]`."""
    logits, mask = public_task(task).forward(engine, batch["inputs"])
    teacher = TopK(batch["teacher_values"], batch["teacher_indices"])
    return kd_loss(logits, teacher, temperature, mask, rest_mass)


@LOSSES.register("supervised")
def supervised(engine: Any, batch: dict, task: str = "classification") -> Any:
    """The task's own loss on labelled public rows (`inputs`, and `labels` for classes):
    the warm-up that makes the foundation model a teacher."""
    return public_task(task).supervised_loss(engine, batch)
