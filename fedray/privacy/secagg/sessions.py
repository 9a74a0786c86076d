"""The client actor's side of SecAgg+: its clients' open sessions, and the encoding of
an update into the ring before it is masked."""

from __future__ import annotations

import numpy as np

from fedray.privacy.secagg.client import ClientSession
from fedray.privacy.secagg.messages import AdvertiseKeys, MaskedInput, MaskInstructions, Params, ShareKeys, Unmask
from fedray.privacy.secagg.quantize import quantize
from fedray.types import ClientId


def encode(update: np.ndarray, num_examples: int, params: Params, num_levels: int,
           rng: np.random.Generator) -> np.ndarray:
    """[w u, w c] in fixed point: the update scaled by the client's weight w (1, or
    min(n, max_weight) / max_weight), then w itself (times the clip range, to use the
    same encoding), so the server can divide the sum by the sum of weights."""
    weight = 1.0 if params.max_weight is None else min(num_examples, params.max_weight) / params.max_weight
    values = np.empty(update.size + 1, dtype=np.float64)
    values[:-1] = update
    values[:-1] *= weight
    values[-1] = weight * params.clip_range
    return quantize(values, params.clip_range, num_levels, rng)


class Sessions:
    """The open protocol sessions of the clients an actor hosts (in memory only: a
    restarted actor has none, and its clients drop out of the round)."""

    def __init__(self) -> None:
        self._open: dict[ClientId, ClientSession] = {}

    def answer(self, client_id: ClientId, message):
        """One stage's reply: `AdvertiseKeys` opens a session, `Unmask` closes it."""
        if isinstance(message, AdvertiseKeys):
            self._open[client_id] = session = ClientSession(client_id, message.server_round)
            return session.advertise(message)
        session = self._session(client_id, message.server_round)
        if isinstance(message, ShareKeys):
            return session.share(message)
        if isinstance(message, Unmask):
            del self._open[client_id]
            return session.unmask(message)
        raise TypeError(f"not a secure-aggregation stage: {type(message).__name__}")

    def masked_input(self, client_id: ClientId, instructions: MaskInstructions, update: np.ndarray,
                     num_examples: int, rng: np.random.Generator) -> MaskedInput:
        """The update, encoded and masked: the only form in which it leaves the client."""
        session = self._session(client_id, instructions.server_round)
        encoded = encode(update, num_examples, instructions.params, instructions.num_levels, rng)
        return session.mask(encoded, instructions)

    def _session(self, client_id: ClientId, server_round: int) -> ClientSession:
        session = self._open.get(client_id)
        if session is None or session.server_round != server_round:
            raise ValueError(f"client {client_id} has no secure-aggregation session for round {server_round} "
                             "(its actor restarted?); it drops out of the round")
        return session
