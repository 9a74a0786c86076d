"""Checks on a client update before it may touch the global model.

Structural checks (shape, dtype, NaN/Inf) always apply, to the update as decoded
from what the client sent. The norm check rejects an update far larger than the
median of recently accepted ones, the cheap, order-robust defence against
exploding or boosted updates. It runs in client-id order (see
strategy/aggregate.py), so its reference, and therefore every accept/reject
decision, does not depend on arrival order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from fedray.config.schema import ValidationConfig
from fedray.types import Sealed


def update_problem(update: Any, num_examples: int, num_params: int) -> tuple[str | None, float]:
    """(why this update must be rejected or None, its L2 norm)."""
    if update is None:
        return "no update returned", math.nan
    if isinstance(update, Sealed):  # secure aggregation: only its form can be checked
        return update.problem(num_params) or (f"num_examples={num_examples}, expected > 0"
                                               if num_examples <= 0 else None), math.nan
    if not isinstance(update, np.ndarray) or update.dtype != np.float32:
        return f"update dtype {getattr(update, 'dtype', type(update).__name__)}, expected float32", math.nan
    if update.shape != (num_params,):
        return f"update shape {update.shape}, expected ({num_params},)", math.nan
    if num_examples <= 0:
        return f"num_examples={num_examples}, expected > 0", math.nan
    # One BLAS pass: NaN or Inf anywhere makes the squared norm non-finite.
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is a finding, not a warning
        squared = float(np.dot(update, update))
    if not math.isfinite(squared):
        return "update contains NaN or Inf", math.nan
    return None, math.sqrt(squared)


def norm_problem(norm: float, accepted_norms: Sequence[float], cfg: ValidationConfig) -> str | None:
    """Reject norms above `max_norm_ratio` x the median of the reference norms."""
    if cfg.max_norm_ratio is None or len(accepted_norms) < cfg.min_reference:
        return None
    median = float(np.median(accepted_norms))
    if norm > cfg.max_norm_ratio * median:
        return (f"update norm {norm:.4g} is {norm / median:.1f}x the median {median:.4g} "
                f"of recent updates (limit {cfg.max_norm_ratio:g}x)")
    return None
