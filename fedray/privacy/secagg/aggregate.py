"""The server's aggregator of masked inputs: a sum in Z_{2^bits} that becomes an update
only after the unmask stage has removed the masks."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedray.privacy.secagg import crypto
from fedray.privacy.secagg.messages import MaskedInput, Params
from fedray.privacy.secagg.quantize import dequantize
from fedray.types import ClientId


class SecureSum:
    """Sums masked inputs; `unmask(correction)` removes the masks; `result()` decodes
    the sum into the mean update: divided by the sum of the clients' weights, or by a
    fixed `denominator` (DP-FedAvg's K) when one is given."""

    def __init__(self, num_params: int, params: Params, denominator: float | None = None):
        self.num_params, self.params, self.denominator = num_params, params, denominator
        self._total = np.zeros(num_params + 1, dtype=np.uint64)
        self.num_levels = 0
        self.reset()

    def init(self) -> Any:
        return ()

    def begin(self, num_levels: int) -> None:
        """The round's encoding (set by the stages before anyone trains)."""
        self.num_levels = num_levels

    def reset(self, state: Any = ()) -> None:
        self._total.fill(0)
        self.clients: list[ClientId] = []
        self.num_added = 0
        self._unmasked: np.ndarray | None = None

    def add(self, client_id: ClientId, weight: float, update: MaskedInput) -> None:
        self._total += update.data  # wraps mod 2^64, so mod 2^bits too
        self.clients.append(client_id)
        self.num_added += 1

    def masked_total(self) -> np.ndarray:
        return self._total & crypto.ring_mask(self.params.bits)

    def unmask(self, correction: np.ndarray) -> np.ndarray:
        """Subtract the masks that do not cancel; the plain sum of the encodings."""
        self._unmasked = (self._total - correction) & crypto.ring_mask(self.params.bits)
        return self._unmasked

    def result(self) -> tuple[np.ndarray, Any]:
        assert self._unmasked is not None, "the unmask stage has not run"
        if self.num_added == 0:
            raise ValueError("no client update to aggregate")
        sums = dequantize(self._unmasked, self.num_added, self.params.clip_range, self.num_levels)
        weight = sums[-1] / self.params.clip_range
        denominator = self.denominator if self.denominator is not None else weight
        if not denominator > 0:
            raise ValueError(f"the clients' weights sum to {weight:.3g}; nothing to average")
        return (sums[:-1] / denominator).astype(np.float32), ()
