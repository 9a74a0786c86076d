"""Checks on a client update before it may touch the global model."""

from __future__ import annotations

import math

import numpy as np

from fedray.types import ClientResult


def update_problem(result: ClientResult, num_params: int) -> str | None:
    """Why this update must be rejected, or None if it is acceptable."""
    update = result.update
    if update is None:
        return "no update returned"
    if not isinstance(update, np.ndarray) or update.dtype != np.float32:
        return f"update dtype {getattr(update, 'dtype', type(update).__name__)}, expected float32"
    if update.shape != (num_params,):
        return f"update shape {update.shape}, expected ({num_params},)"
    if result.num_examples <= 0:
        return f"num_examples={result.num_examples}, expected > 0"
    # One BLAS pass: NaN or Inf anywhere makes the squared norm non-finite.
    if not math.isfinite(float(np.dot(update, update))):
        return "update contains NaN or Inf"
    return None
