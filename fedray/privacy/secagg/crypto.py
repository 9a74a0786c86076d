"""The cryptographic parts of SecAgg+: key agreement, key derivation, the mask
generator and authenticated encryption of the secret shares.

- X25519 Diffie-Hellman gives every pair of clients a shared secret that the
  server, which only relays public keys, cannot compute;
- HKDF-SHA256 turns a shared secret into a key bound to its purpose and round;
- a ChaCha20 keystream expands a 32-byte seed into a mask of any length (a
  cryptographic PRG, as the protocol's security proof assumes; a seeded numpy
  generator would be predictable);
- ChaCha20-Poly1305 encrypts each share for its recipient, so the server can
  route shares without reading or altering them.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_NONCE_BYTES = 12
_ZERO_NONCE = bytes(16)  # ChaCha20's 16-byte counter||nonce; every mask key is used once


RandomBytes = Callable[[int], bytes]
"""Where a session's secrets come from: `os.urandom` (the OS's CSPRNG) in a run; tests
pass a seeded source so that a test claiming a fixed seed is deterministic."""


def keypair(random_bytes: RandomBytes = os.urandom) -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw bytes (private, public): any 32 bytes are a valid
    X25519 private key (RFC 7748 clamps them)."""
    raw = random_bytes(KEY_BYTES)
    return raw, public_of(raw)


def public_of(private: bytes) -> bytes:
    """The public key of a raw X25519 private key (the server recomputes a dropped
    client's pairwise masks from its reconstructed private key)."""
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def agree(private: bytes, public: bytes, purpose: bytes) -> bytes:
    """A 32-byte key both ends of a pair derive alike: HKDF(X25519(private, public))."""
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(shared)


def random_seed(random_bytes: RandomBytes = os.urandom) -> bytes:
    """32 random bytes (a self-mask seed)."""
    return random_bytes(KEY_BYTES)


def mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """`length` uniform elements of Z_{2^bits} (uint64) from the ChaCha20 keystream of `seed`."""
    stream = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor().update(bytes(8 * length))
    values = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    return values & ring_mask(bits)


def ring_mask(bits: int) -> np.uint64:
    """2^bits - 1 as uint64: `x & ring_mask` is x mod 2^bits."""
    return np.uint64((1 << bits) - 1)


def encrypt(key: bytes, plaintext: bytes, associated: bytes, random_bytes: RandomBytes = os.urandom) -> bytes:
    """nonce || ChaCha20-Poly1305(plaintext), authenticated together with `associated`."""
    nonce = random_bytes(_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, data: bytes, associated: bytes) -> bytes:
    """The plaintext; ValueError if the ciphertext was altered or is for someone else."""
    try:
        return ChaCha20Poly1305(key).decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], associated)
    except InvalidTag:
        raise ValueError("a secret share failed authentication (altered, or not meant for this client)") from None
