"""Byzantine-robust aggregators: statistics that a few malicious updates cannot drag far.

Unlike the streaming weighted mean, each of these must see all of a round's
updates at once, so it keeps them (references to the object-store views, no
copies) until `result`. Updates are added in client-id order, so ties break the
same way every run.

- `median`: coordinate-wise median (Yin et al., ICML 2018).
- `trimmed_mean`: per coordinate, drop the `beta` share of largest and of
  smallest values, average the rest (Yin et al., ICML 2018).
- `krum` / `multi_krum`: score each update by the summed squared distances to
  its n - f - 2 nearest neighbours and keep the best one, or the weighted mean of
  the best `num_selected` (Blanchard et al., NeurIPS 2017).
- `centered_clip`: start from the previous round's aggregate and move towards
  the updates, each clipped to radius `tau` around the current centre, for
  `iterations` steps (Karimireddy, He and Jaggi, ICML 2021).

Median, trimmed mean and Krum's scores ignore the weights, as in their papers;
multi-Krum's mean and centered clipping use them (normalised), which reduces to
the papers' unweighted forms when every client holds as many examples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedray.strategy.aggregate import AGGREGATORS, Aggregator
from fedray.types import ClientId


class Buffered:
    """Keeps the round's (weight, update) pairs; `combine` turns them into the aggregate."""

    def __init__(self, combine, init=lambda: ()):
        self._combine, self._init = combine, init
        self.reset()

    def init(self) -> Any:
        return self._init()

    def reset(self, state: Any = ()) -> None:
        self._state = state
        self._weights: list[float] = []
        self._updates: list[np.ndarray] = []
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        self._weights.append(float(weight))
        self._updates.append(update)
        self.num_added += 1

    def result(self) -> tuple[np.ndarray, Any]:
        if not self._updates:
            raise ValueError("no client update to aggregate")
        stacked = np.stack(self._updates)
        aggregate, state = self._combine(stacked, np.asarray(self._weights, dtype=np.float64), self._state)
        return np.ascontiguousarray(aggregate, dtype=np.float32), state


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """Per coordinate, the median over clients (the mean of the middle two for an even count)."""
    return np.median(updates, axis=0).astype(np.float32)


def trimmed(updates: np.ndarray, beta: float) -> np.ndarray:
    """Per coordinate, the mean after dropping floor(beta * n) largest and smallest values."""
    n = updates.shape[0]
    k = int(math.floor(beta * n))
    ordered = np.sort(updates, axis=0)
    return ordered[k : n - k].mean(axis=0, dtype=np.float64).astype(np.float32)


def krum_scores(updates: np.ndarray, num_malicious: int) -> np.ndarray:
    """Sum of squared distances from each update to its n - f - 2 nearest others (at
    least one neighbour when fewer updates than Krum assumes came in)."""
    n = updates.shape[0]
    flat = updates.astype(np.float64)
    sq = np.einsum("ij,ij->i", flat, flat)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    neighbours = max(1, min(n - 1, n - num_malicious - 2))
    nearest = np.sort(dist, axis=1)[:, :neighbours]
    return nearest.sum(axis=1) if n > 1 else np.zeros(1)


def multi_krum_mean(updates: np.ndarray, weights: np.ndarray, num_malicious: int, num_selected: int) -> np.ndarray:
    """The weighted mean of the `num_selected` updates with the lowest Krum scores (ties: first added)."""
    scores = krum_scores(updates, num_malicious)
    keep = np.argsort(scores, kind="stable")[: min(num_selected, len(scores))]
    w = weights[keep] / weights[keep].sum()
    return np.tensordot(w, updates[keep].astype(np.float64), axes=1).astype(np.float32)


def centered_clipping(updates: np.ndarray, weights: np.ndarray, centre: np.ndarray, tau: float,
                      iterations: int) -> np.ndarray:
    """v <- v + sum_i w_i (x_i - v) min(1, tau / ||x_i - v||), repeated `iterations` times."""
    v = centre.astype(np.float64)
    w = weights / weights.sum()
    flat = updates.astype(np.float64)
    for _ in range(iterations):
        diff = flat - v
        norms = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        factor = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
        v = v + np.tensordot(w * factor, diff, axes=1)
    return v.astype(np.float32)


@AGGREGATORS.register("median")
def median(num_params: int) -> Aggregator:
    """Coordinate-wise median."""
    return Buffered(lambda u, w, s: (coordinate_median(u), s))


@AGGREGATORS.register("trimmed_mean")
def trimmed_mean(num_params: int, beta: float = 0.1) -> Aggregator:
    """Coordinate-wise mean without the `beta` share of extremes on each side."""
    if not 0 <= beta < 0.5:
        raise ValueError(f"beta must be in [0, 0.5), got {beta}")
    return Buffered(lambda u, w, s: (trimmed(u, beta), s))


@AGGREGATORS.register("krum")
def krum(num_params: int, num_malicious: int = 1) -> Aggregator:
    """The single update closest to its n - f - 2 neighbours."""
    return multi_krum(num_params, num_malicious, num_selected=1)


@AGGREGATORS.register("multi_krum")
def multi_krum(num_params: int, num_malicious: int = 1, num_selected: int = 2) -> Aggregator:
    """The weighted mean of the `num_selected` updates Krum scores best."""
    if num_malicious < 0:
        raise ValueError(f"num_malicious must be >= 0, got {num_malicious}")
    if num_selected < 1:
        raise ValueError(f"num_selected must be >= 1, got {num_selected}")
    return Buffered(lambda u, w, s: (multi_krum_mean(u, w, num_malicious, num_selected), s))


@AGGREGATORS.register("centered_clip")
def centered_clip(num_params: int, tau: float = 1.0, iterations: int = 3) -> Aggregator:
    """Centered clipping around the previous aggregate (the first round: the median)."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")

    def combine(updates: np.ndarray, weights: np.ndarray, previous):
        centre = coordinate_median(updates) if previous is None else previous
        v = centered_clipping(updates, weights, centre, tau, iterations)
        return v, v.copy()

    return Buffered(combine, init=lambda: None)
