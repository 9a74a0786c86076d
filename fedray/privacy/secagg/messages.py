"""What travels in SecAgg+, stage by stage (frozen records; sizes count toward bytes)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from fedray.types import ClientId


@dataclasses.dataclass(frozen=True)
class Params:
    """The protocol's settings for one round, fixed before it starts."""

    threshold: int
    """t: shares needed to reconstruct a client's secrets."""
    num_neighbours: int
    """Clients each one is paired with on the ring (all others if the round has fewer)."""
    bits: int
    """The ring Z_{2^bits} of the masked vectors."""
    clip_range: float
    """Values are clipped to [-clip_range, clip_range] before encoding."""
    max_weight: float | None = None
    """None: every client counts once; else a client counts min(n, max_weight) / max_weight."""


# ---- stage 1: advertise keys -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdvertiseKeys:
    server_round: int


@dataclasses.dataclass(frozen=True)
class PublicKeys:
    """A client's two X25519 public keys: `cipher` encrypts shares sent to it, `mask`
    agrees pairwise masks."""

    client_id: ClientId
    cipher: bytes
    mask: bytes

    @property
    def num_bytes(self) -> int:
        return len(self.cipher) + len(self.mask)


# ---- stage 2: share keys ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShareKeys:
    """The neighbours' public keys, and where on the polynomial each one's share lies."""

    server_round: int
    params: Params
    neighbours: Mapping[ClientId, PublicKeys]
    points: Mapping[ClientId, int]
    """Evaluation point of every participant (its position in the round, from 1)."""

    @property
    def num_bytes(self) -> int:
        return sum(k.num_bytes for k in self.neighbours.values()) + 4 * len(self.points)


@dataclasses.dataclass(frozen=True)
class EncryptedShares:
    """Shares of the sender's self-mask seed and mask key, one ciphertext per neighbour."""

    client_id: ClientId
    ciphertexts: Mapping[ClientId, bytes]

    @property
    def num_bytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts.values())


# ---- stage 3: masked input (sent with the round's broadcast) ------------------------


@dataclasses.dataclass(frozen=True)
class MaskInstructions:
    """What a client needs to mask its update: who else is still in (their mask keys),
    the shares addressed to it, and the encoding's number of levels."""

    server_round: int
    params: Params
    num_levels: int
    alive: Mapping[ClientId, bytes]
    """Neighbours that completed the key sharing -> their mask public keys."""
    ciphertexts: Mapping[ClientId, bytes]
    """Sender -> the shares it encrypted for this client."""

    @property
    def num_bytes(self) -> int:
        return 32 * len(self.alive) + sum(len(c) for c in self.ciphertexts.values()) + 16


@dataclasses.dataclass(frozen=True)
class MaskedInput:
    """x + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^bits: uniform on its own, so the server
    learns nothing from one; only the sum over the round means anything."""

    client_id: ClientId
    data: np.ndarray
    """uint64, the update's encoding followed by the encoded weight."""
    bits: int

    @property
    def num_bytes(self) -> int:
        return (self.bits + 7) // 8 * int(self.data.size)

    def problem(self, num_params: int) -> str | None:
        """Why this cannot be a well-formed masked update of `num_params` values, or None."""
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.uint64:
            return f"masked input dtype {getattr(self.data, 'dtype', None)}, expected uint64"
        if self.data.shape != (num_params + 1,):
            return f"masked input shape {self.data.shape}, expected ({num_params + 1},)"
        if self.bits < 64 and int(self.data.max(initial=0)) >> self.bits:
            return f"masked input has elements outside Z_2^{self.bits}"
        return None


# ---- stage 4: unmask ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unmask:
    """The outcome of the masked-input stage: whose masked inputs are in the sum, and
    who dropped out after sharing their keys."""

    server_round: int
    survivors: tuple[ClientId, ...]
    dropped: tuple[ClientId, ...]


@dataclasses.dataclass(frozen=True)
class RevealedShares:
    """A survivor's shares of its neighbours' secrets: the self-mask seed of each
    neighbour in the sum (`seeds`), the mask key of each one that dropped (`keys`)."""

    client_id: ClientId
    seeds: Mapping[ClientId, bytes]
    keys: Mapping[ClientId, bytes]

    @property
    def num_bytes(self) -> int:
        return sum(len(s) for s in self.seeds.values()) + sum(len(s) for s in self.keys.values())
