"""Sparsifying codecs: top-k and random-k, with error feedback.

Only k of the n coordinates travel. Top-k sends the largest magnitudes with their
indices (int32 + float32 each); random-k draws its indices from `ctx.rng`, which
the server can draw again, so only the values travel. Both keep what they did not
send in the error-feedback residual by default (Stich et al., "Sparsified SGD
with Memory", NeurIPS 2018), without which they lose most of the update.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedray.compress.codec import CODECS, Codec, Encoded, check_fraction, codec_transform, expect
from fedray.transforms import UpdateTransform
from fedray.types import Context

_RNG_TAG = 0x5BA125


def num_kept(fraction: float, n: int) -> int:
    """Coordinates a sparsifier keeps of `n`: ceil(fraction * n), at least 1."""
    return max(1, min(n, math.ceil(fraction * n)))


@dataclasses.dataclass(frozen=True)
class Sparse(Encoded):
    indices: np.ndarray
    """int32, increasing."""
    values: np.ndarray
    """float32, one per index."""
    count: int
    """Length of the dense update."""


def _scatter(count: int, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    if indices.shape != values.shape or (indices.size and (indices.min() < 0 or indices.max() >= count)):
        raise ValueError(f"{indices.size} indices and {values.size} values do not fit an update of {count}")
    out = np.zeros(count, dtype=np.float32)
    out[indices] = values
    return out


@CODECS.register("top_k")
def top_k(fraction: float = 0.01, error_feedback: bool = True) -> UpdateTransform:
    """The ceil(fraction * n) largest-magnitude coordinates and their indices."""
    check_fraction("fraction", fraction)

    def encode(x: np.ndarray, ctx: Context) -> Sparse:
        k = num_kept(fraction, x.size)
        if k == x.size:
            indices = np.arange(x.size, dtype=np.int32)
        else:
            indices = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :]).astype(np.int32)
        return Sparse(indices, x[indices].astype(np.float32), x.size)

    def decode(payload, ctx) -> np.ndarray:
        p = expect(payload, Sparse)
        return _scatter(p.count, p.indices, p.values)

    return codec_transform(Codec(encode, decode), error_feedback)


@dataclasses.dataclass(frozen=True)
class Values(Encoded):
    values: np.ndarray
    """float32 at the coordinates both sides draw from the shared seed."""
    count: int


@CODECS.register("random_k")
def random_k(fraction: float = 0.01, error_feedback: bool = True) -> UpdateTransform:
    """ceil(fraction * n) coordinates drawn from the (round, client) seed; only the values
    travel. Without error feedback the values are scaled by n / k, so the decoded
    update is unbiased."""
    check_fraction("fraction", fraction)

    def chosen(n: int, ctx: Context) -> np.ndarray:
        return np.sort(ctx.rng(_RNG_TAG).choice(n, size=num_kept(fraction, n), replace=False))

    def encode(x: np.ndarray, ctx: Context) -> Values:
        indices = chosen(x.size, ctx)
        values = x[indices]
        if not error_feedback:
            values = values * np.float32(x.size / indices.size)
        return Values(values.astype(np.float32), x.size)

    def decode(payload, ctx) -> np.ndarray:
        p = expect(payload, Values)
        return _scatter(p.count, chosen(p.count, ctx), p.values)

    return codec_transform(Codec(encode, decode), error_feedback)
