"""The server's half of DP-FedAvg (McMahan et al., ICLR 2018): an unweighted mean of the
clipped updates over a fixed denominator, plus Gaussian noise.

Each client's clipped update has norm at most C, so their sum changes by at most
C when one client joins or leaves: its sensitivity. Noise N(0, (z C)^2) on the sum,
that is N(0, (z C / K)^2) on the mean over K = the expected clients per round,
makes the round's release the sampled Gaussian mechanism with noise multiplier z.
The mean divides by K, not by the number of clients that arrived: under Poisson
sampling that number is random, and dividing by it would let it leak. Example
counts do not weight the mean either: a weight would scale a client's influence
past C.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fedray.transforms import UpdateTransform, stateless
from fedray.types import ClientId, Context

_NOISE_TAG = 0xD9


class FixedDenominatorMean:
    """sum_i u_i / K in one preallocated buffer, whatever the clients' example counts."""

    def __init__(self, num_params: int, denominator: float):
        self._sum = np.zeros(num_params, dtype=np.float32)
        self.denominator = float(denominator)
        self.reset()

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self._sum.fill(0.0)
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        from fedray.models.flat import as_tensor  # torch's axpy; imported where updates are summed

        as_tensor(self._sum).add_(as_tensor(update))
        self.num_added += 1

    def result(self) -> tuple[np.ndarray, Any]:
        if self.num_added == 0:
            raise ValueError("no client update to aggregate")
        self._sum *= np.float32(1.0 / self.denominator)
        return self._sum, ()


def gaussian_noise(noise_multiplier: float, denominator: float,
                   clip_norm: Callable[[Context], float]) -> UpdateTransform:
    """Add N(0, (noise_multiplier * C / denominator)^2) to every coordinate of the mean,
    C being the round's clip norm; drawn from the server's generator for the round."""
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")

    def add_noise(update: np.ndarray, params: np.ndarray, ctx: Context) -> np.ndarray:
        std = noise_multiplier * clip_norm(ctx) / denominator
        if std == 0:
            return update
        noise = ctx.rng(_NOISE_TAG).standard_normal(update.shape, dtype=np.float32)
        return (update + np.float32(std) * noise).astype(np.float32)

    return stateless(add_noise)
