"""The server's side of SecAgg+: the ring, routing, and removing the masks from the sum.

The server never sees an update: it relays public keys and encrypted shares,
sums the masked inputs it receives, and in the end reconstructs, from at least t
shares each, the self-mask seeds of the clients in the sum and the mask keys of
the clients that dropped out after sharing, which lets it subtract every mask
that does not cancel. Each client shares only with its `num_neighbours` ring
neighbours (SecAgg+), so a client's work grows with log n instead of n.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np

from fedray.privacy.secagg import crypto, shamir
from fedray.privacy.secagg.client import pairwise_mask
from fedray.privacy.secagg.messages import (
    EncryptedShares, MaskInstructions, Params, PublicKeys, RevealedShares, ShareKeys, Unmask,
)
from fedray.privacy.secagg.quantize import levels
from fedray.types import ClientId


class SecAggError(Exception):
    """The round cannot be unmasked (too few shares) or set up (too few clients)."""


def ring_neighbours(participants: list[ClientId], num_neighbours: int) -> dict[ClientId, list[ClientId]]:
    """Each participant's neighbours: the num_neighbours / 2 on either side of it on
    the ring of participants (everyone else when the round is that small)."""
    n = len(participants)
    if num_neighbours >= n - 1:
        return {c: [o for o in participants if o != c] for c in participants}
    half = num_neighbours // 2
    out = {}
    for i, c in enumerate(participants):
        out[c] = sorted({participants[(i + j) % n] for j in range(-half, half + 1) if j})
    return out


@dataclasses.dataclass
class ServerRound:
    """What the server knows of one round of the protocol."""

    server_round: int
    params: Params
    participants: list[ClientId]
    """Clients asked to take part, sorted; a client's evaluation point is its position + 1."""
    num_levels: int = 0
    keys: dict[ClientId, PublicKeys] = dataclasses.field(default_factory=dict)
    neighbours: dict[ClientId, list[ClientId]] = dataclasses.field(default_factory=dict)
    shared: dict[ClientId, EncryptedShares] = dataclasses.field(default_factory=dict)

    @classmethod
    def start(cls, server_round: int, params: Params, participants: Iterable[ClientId]) -> "ServerRound":
        participants = sorted(participants)
        return cls(server_round, params, participants, levels(params.bits, len(participants)))

    @property
    def points(self) -> dict[ClientId, int]:
        return {c: i + 1 for i, c in enumerate(self.participants)}

    def share_requests(self, keys: Mapping[ClientId, PublicKeys]) -> dict[ClientId, ShareKeys]:
        """After stage 1: the ring over the clients that advertised keys; what each must share."""
        self.keys = dict(keys)
        alive = sorted(self.keys)
        if len(alive) < self.params.threshold:
            raise SecAggError(f"{len(alive)} client(s) advertised keys; secure aggregation with threshold "
                              f"t={self.params.threshold} needs at least t")
        self.neighbours = ring_neighbours(alive, self.params.num_neighbours)
        points = self.points
        return {c: ShareKeys(self.server_round, self.params, {v: self.keys[v] for v in self.neighbours[c]}, points)
                for c in alive}

    def mask_instructions(self, shared: Mapping[ClientId, EncryptedShares]) -> dict[ClientId, MaskInstructions]:
        """After stage 2: route the encrypted shares; each client masks with its
        neighbours that completed sharing."""
        self.shared = dict(shared)
        out = {}
        for c in sorted(self.shared):
            alive = [v for v in self.neighbours[c] if v in self.shared]
            inbox = {v: self.shared[v].ciphertexts[c] for v in [*alive, c]}  # its own shares too
            out[c] = MaskInstructions(self.server_round, self.params, self.num_levels,
                                      {v: self.keys[v].mask for v in alive}, inbox)
        return out

    def unmask_request(self, survivors: Iterable[ClientId]) -> Unmask:
        """After stage 3: whose masked inputs are in the sum, and who dropped out."""
        survivors = tuple(sorted(survivors))
        dropped = tuple(c for c in sorted(self.shared) if c not in set(survivors))
        return Unmask(self.server_round, survivors, dropped)

    def correction(self, request: Unmask, revealed: Mapping[ClientId, RevealedShares], length: int) -> np.ndarray:
        """What to subtract from the sum of the survivors' masked inputs (mod 2^bits):
        their self masks, and the pairwise masks they share with dropped clients."""
        bits, t = self.params.bits, self.params.threshold
        total = np.zeros(length, dtype=np.uint64)
        survivors = set(request.survivors)
        for v in request.survivors:
            seed = self._reconstruct(v, {u: r.seeds.get(v) for u, r in revealed.items()}, "self-mask seed")
            total += crypto.mask(seed, length, bits)
        for v in request.dropped:
            private = self._reconstruct(v, {u: r.keys.get(v) for u, r in revealed.items()}, "mask key")
            for u in self.neighbours[v]:
                if u not in survivors:
                    continue
                pair = pairwise_mask(private, self.keys[u].mask, self.server_round, length, bits)
                total = total + pair if u < v else total - pair  # u added +PRG when u < v
        return total & crypto.ring_mask(bits)

    def _reconstruct(self, owner: ClientId, pieces: Mapping[ClientId, bytes | None], what: str) -> bytes:
        shares = [shamir.decode(p) for p in pieces.values() if p is not None]
        t = self.params.threshold
        if len(shares) < t:
            raise SecAggError(f"only {len(shares)} share(s) of client {owner}'s {what} came back, fewer than "
                              f"the threshold t={t}: the round's sum cannot be unmasked")
        return shamir.combine(shares, t)
