"""Knowledge-distillation losses and the compact logits that travel for them.

Teacher logits travel as their top-k (values and indices) to keep payloads
small; the student is matched on that support: KL(p_T || q_S) at temperature T,
with both distributions renormalised over the teacher's k entries (Hinton et
al. 2015, scaled by T^2 so gradients keep their size across temperatures).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fedray.config.registry import Registry

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


def kd_loss(student_logits: Any, teacher: TopK, temperature: float) -> Any:
    """KL(teacher || student) over the teacher's top-k support, times T^2 (torch)."""
    import torch

    values = torch.as_tensor(teacher.values, device=student_logits.device)
    indices = torch.as_tensor(teacher.indices, device=student_logits.device)
    t = float(temperature)
    log_p = torch.log_softmax(values / t, dim=-1)
    picked = torch.gather(student_logits.float(), -1, indices) / t
    log_q = picked - torch.logsumexp(picked, dim=-1, keepdim=True)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.mean() * t * t


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


def kd_regularizer(inputs: Any, teacher: TopK, weight: float, temperature: float, batch_size: int):
    """A `train_local` regularizer: weight x KD loss towards `teacher` on a random
    minibatch of the public `inputs` (a tensor on the model's device) each step."""
    import torch

    values = torch.as_tensor(teacher.values, device=inputs.device)
    indices = torch.as_tensor(teacher.indices, device=inputs.device)
    size = min(batch_size, len(inputs))

    def term(model: Any, generator: Any) -> Any:
        pick = torch.randint(len(inputs), (size,), generator=generator).to(inputs.device)
        out = model(inputs[pick])
        logits = getattr(out, "logits", out)
        return weight * kd_loss(logits, TopK(values[pick], indices[pick]), temperature)

    return term


@LOSSES.register("distill")
def distill(engine: Any, batch: dict, temperature: float = 2.0) -> Any:
    """The engine (student) matches the teacher's top-k on `batch["inputs"]`."""
    out = engine(batch["inputs"])
    logits = getattr(out, "logits", out)
    return kd_loss(logits, TopK(batch["teacher_values"], batch["teacher_indices"]), temperature)


@LOSSES.register("cross_entropy")
def cross_entropy(engine: Any, batch: dict) -> Any:
    """Supervised loss on labelled batches (`inputs`, `labels`), for warm-up or tests."""
    import torch.nn.functional as F

    out = engine(batch["inputs"])
    logits = getattr(out, "logits", out)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1))
