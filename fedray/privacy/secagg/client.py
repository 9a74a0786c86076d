"""A client's side of SecAgg+ (Bell et al., CCS 2020), one session per round.

The session lives in the client actor's memory and never leaves it: its private
keys and self-mask seed are what the masks are made of. Stages:

1. `advertise`: two fresh X25519 key pairs (one to receive shares, one for masks);
2. `share`: b_u and the mask private key are split with Shamir (threshold t)
   among the ring neighbours and the client itself, each share encrypted for its
   recipient under a key agreed with it;
3. `mask`: the encoded update plus PRG(b_u) plus, for every neighbour v still in,
   +PRG(s_uv) if u < v else -PRG(s_uv), all mod 2^bits; the pairwise masks cancel
   in the sum, the self mask is removed once b_u is reconstructed;
4. `unmask`: for each neighbour, the share of its self-mask seed if its masked
   input is in the sum, or of its mask key if it dropped out, never both.
"""

from __future__ import annotations

import os

import numpy as np

from fedray.privacy.secagg import crypto, shamir
from fedray.privacy.secagg.messages import (
    AdvertiseKeys, EncryptedShares, MaskedInput, MaskInstructions, PublicKeys, RevealedShares, ShareKeys, Unmask,
)
from fedray.types import ClientId

SHARE_PURPOSE = b"fedray secagg+ share encryption"
MASK_PURPOSE = b"fedray secagg+ pairwise mask"


def associated_data(server_round: int, sender: ClientId, receiver: ClientId) -> bytes:
    """Binds a ciphertext to its round, sender and receiver: the server cannot replay
    or redirect it."""
    return b"%d:%d:%d" % (server_round, sender, receiver)


def pairwise_mask(private: bytes, public: bytes, server_round: int, length: int, bits: int) -> np.ndarray:
    """PRG(s_uv), s_uv agreed from one side's mask private key and the other's public key."""
    seed = crypto.agree(private, public, MASK_PURPOSE + b":%d" % server_round)
    return crypto.mask(seed, length, bits)


class ClientSession:
    """One client's secrets and progress in one round of the protocol."""

    def __init__(self, client_id: ClientId, server_round: int, random_bytes: crypto.RandomBytes = os.urandom):
        """`random_bytes`: the source of every secret of the session (keys, the self-mask
        seed, share polynomials, nonces); the OS's CSPRNG unless a test seeds one."""
        self.client_id, self.server_round = client_id, server_round
        self.random_bytes = random_bytes
        self.cipher_private, self.cipher_public = crypto.keypair(random_bytes)
        self.mask_private, self.mask_public = crypto.keypair(random_bytes)
        self.seed = crypto.random_seed(random_bytes)
        self.neighbour_keys: dict[ClientId, PublicKeys] = {}
        self.received: dict[ClientId, bytes] = {}
        self.params = None
        self.unmasked = False

    def advertise(self, message: AdvertiseKeys) -> PublicKeys:
        return PublicKeys(self.client_id, self.cipher_public, self.mask_public)

    def share(self, message: ShareKeys) -> EncryptedShares:
        """Split b_u and the mask key among the neighbours; encrypt each one's shares."""
        self.params, self.neighbour_keys = message.params, dict(message.neighbours)
        self.neighbour_keys[self.client_id] = PublicKeys(self.client_id, self.cipher_public, self.mask_public)
        t = message.params.threshold
        if len(self.neighbour_keys) < t:
            raise ValueError(f"client {self.client_id} has {len(self.neighbour_keys) - 1} neighbour(s), "
                             f"too few for the threshold t={t}")
        order = sorted(self.neighbour_keys)  # itself included: a survivor holds a share of its own seed
        points = [message.points[v] for v in order]
        seed_shares = shamir.split(self.seed, t, points, self.random_bytes)
        key_shares = shamir.split(self.mask_private, t, points, self.random_bytes)
        out = {}
        for v, seed_share, key_share in zip(order, seed_shares, key_shares):
            key = crypto.agree(self.cipher_private, self.neighbour_keys[v].cipher, SHARE_PURPOSE)
            plaintext = shamir.encode(seed_share) + shamir.encode(key_share)
            out[v] = crypto.encrypt(key, plaintext, associated_data(self.server_round, self.client_id, v),
                                    self.random_bytes)
        return EncryptedShares(self.client_id, out)

    def mask(self, encoded: np.ndarray, message: MaskInstructions) -> MaskedInput:
        """The masked input of an encoded update (uint64 in Z_{2^bits})."""
        bits = message.params.bits
        assert message.server_round == self.server_round, "instructions of another round"
        self.received = dict(message.ciphertexts)
        total = encoded.astype(np.uint64) + crypto.mask(self.seed, encoded.size, bits)
        for v, public in sorted(message.alive.items()):
            pair = pairwise_mask(self.mask_private, public, self.server_round, encoded.size, bits)
            total = total + pair if self.client_id < v else total - pair  # wraps mod 2^64
        return MaskedInput(self.client_id, total & crypto.ring_mask(bits), bits)

    def unmask(self, message: Unmask) -> RevealedShares:
        """Reveal, for each neighbour that sent this client shares, either its seed share
        (its input is in the sum) or its key share (it dropped out)."""
        survivors, dropped = set(message.survivors), set(message.dropped)
        if survivors & dropped:
            raise ValueError("the server named clients both in the sum and dropped; refusing to unmask")
        if self.unmasked:
            raise ValueError(f"client {self.client_id} already answered the unmask stage of this round")
        if len(survivors) < self.params.threshold:
            raise ValueError(f"only {len(survivors)} masked input(s) in the sum, fewer than t={self.params.threshold}")
        self.unmasked = True
        seeds, keys = {}, {}
        for v, ciphertext in sorted(self.received.items()):
            key = crypto.agree(self.cipher_private, self.neighbour_keys[v].cipher, SHARE_PURPOSE)
            plaintext = crypto.decrypt(key, ciphertext, associated_data(self.server_round, v, self.client_id))
            size = len(plaintext) // 2
            if v in survivors:
                seeds[v] = plaintext[:size]
            elif v in dropped:
                keys[v] = plaintext[size:]
        return RevealedShares(self.client_id, seeds, keys)
