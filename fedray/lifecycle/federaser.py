"""FedEraser: unlearn clients by rebuilding the global model from the update ledger.

Liu et al., "FedEraser: Enabling Efficient Client-Level Data Removal from Federated
Learning Models", IWQoS 2021. The ledger keeps every accepted update of rounds
t_1 < t_2 < ... (every `server.ledger.every` rounds). Starting from a model that
never saw the forgotten clients, each recorded round becomes one step built from
the remaining clients only:

- while the model is still the one the round started from (its hash is the
  round's `base_hash`), the stored updates are exactly what the remaining clients
  computed, and are used as they are (FedEraser's first round);
- afterwards each remaining client trains briefly from the current model
  (calibration, a fraction of its original local training) and its fresh update
  U^ keeps the direction while the stored update U gives the length, tensor by
  tensor: U~ = ||U|| * U^ / ||U^||.

The calibrated updates are averaged with the stored weights and applied through
the run's server step. Training happens elsewhere: `calibrate` is given, so this
module is the algorithm alone.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np

from fedray.lifecycle.ledger import LedgerRound, model_hash
from fedray.types import ClientId

Calibrate = Callable[[int, np.ndarray, list[ClientId]], dict[ClientId, np.ndarray]]
"""(recorded round, current parameters, clients) -> each client's fresh update trained
from those parameters with the calibration budget; failed clients are left out."""

Step = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
"""(parameters, aggregated update, recorded round) -> the new parameters."""


@dataclasses.dataclass(frozen=True)
class ErasedRound:
    """One step of the rebuild."""

    server_round: int
    """The recorded round it replays."""
    clients: tuple[ClientId, ...]
    """Remaining clients whose updates it used."""
    calibrated: bool
    """False: the stored updates were used as they are (the model had not diverged yet)."""
    params: np.ndarray
    """The global model after the step."""


def calibrated_update(fresh: np.ndarray, old_norms: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """`fresh` rescaled tensor by tensor to the stored update's norms (zero where `fresh` is)."""
    out = np.array(fresh, dtype=np.float32, copy=True)
    bounds = np.cumsum([0, *sizes])
    for (a, b), old in zip(zip(bounds[:-1], bounds[1:]), old_norms):
        norm = float(np.linalg.norm(out[a:b].astype(np.float64)))
        out[a:b] *= np.float32(old / norm) if norm > 0 else np.float32(0.0)
    return out


def federaser(params: np.ndarray, rounds: Iterable[LedgerRound], forget: set[ClientId], calibrate: Calibrate,
              step: Step, on_round: Callable[[ErasedRound], None] | None = None) -> np.ndarray:
    """The unlearned model: `params` (a model without the forgotten clients' influence)
    moved by each recorded round's remaining clients, in round order."""
    params = np.array(params, dtype=np.float32, copy=True)
    for stored in sorted(rounds, key=lambda r: r.server_round):
        keep = [i for i, c in enumerate(stored.clients) if c not in forget]
        if not keep:
            continue
        exact = model_hash(params) == stored.base_hash
        if exact:
            updates = {i: stored.update(i) for i in keep}
        else:
            fresh = calibrate(stored.server_round, params, [stored.clients[i] for i in keep])
            updates = {i: calibrated_update(fresh[stored.clients[i]], stored.layer_norms[i], stored.layer_sizes)
                       for i in keep if stored.clients[i] in fresh}
        if not updates:
            continue
        total = sum(stored.weights[i] for i in updates)
        aggregate = np.zeros_like(params)
        for i, update in updates.items():
            aggregate += np.float32(stored.weights[i] / total) * update
        params = step(params, aggregate, stored.server_round)
        if on_round is not None:
            on_round(ErasedRound(stored.server_round, tuple(stored.clients[i] for i in updates), not exact, params))
    return params
