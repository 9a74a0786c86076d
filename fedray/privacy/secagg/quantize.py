"""Fixed-point encoding of float updates into Z_{2^bits}, so masks can hide them exactly.

Masks are uniform in a finite ring; a float cannot be masked without leaking
through its rounding. Each value is clipped to [-c, c] and mapped onto the
integers 0..L, where L = floor((2^bits - 1) / n) for the round's n participants,
so the sum of n encodings never wraps around and decodes exactly:
sum_x = S * 2c / L - m * c for the m values summed. Rounding is stochastic
(unbiased), drawn from the client's seeded generator.
"""

from __future__ import annotations

import numpy as np


def levels(bits: int, participants: int) -> int:
    """L: the largest encoding of one value such that `participants` of them sum below 2^bits."""
    return ((1 << bits) - 1) // max(1, participants)


def quantize(values: np.ndarray, clip_range: float, num_levels: int, rng: np.random.Generator) -> np.ndarray:
    """Clip to [-clip_range, clip_range] and encode as integers 0..num_levels (uint64)."""
    scaled = (np.clip(values.astype(np.float64), -clip_range, clip_range) + clip_range) * (num_levels / (2 * clip_range))
    low = np.floor(scaled)
    up = rng.random(scaled.shape) < (scaled - low)
    return np.minimum(low + up, num_levels).astype(np.uint64)


def dequantize(total: np.ndarray, count: int, clip_range: float, num_levels: int) -> np.ndarray:
    """The sum of `count` encoded vectors back as floats (float64)."""
    return total.astype(np.float64) * (2 * clip_range / num_levels) - count * clip_range
