"""Shamir secret sharing over the prime field GF(2^521 - 1), for 32-byte secrets.

A secret s is the constant term of a random polynomial of degree t - 1; share i
is the polynomial's value at x = i (i >= 1). Any t shares give s back by
Lagrange interpolation at 0; fewer reveal nothing about it (Shamir 1979). The
Mersenne prime 2^521 - 1 is larger than any 32-byte secret, so a secret is one
field element. Coefficients come from the operating system's CSPRNG (`secrets`),
never from a seeded generator: they are what keeps a secret secret.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple, Sequence

PRIME = 2**521 - 1
"""A Mersenne prime; every 32-byte (256-bit) secret is below it."""
SHARE_BYTES = 66
"""Bytes of one share's value (521 bits)."""


class Share(NamedTuple):
    x: int
    """The evaluation point, 1..n (0 would be the secret itself)."""
    y: int


def split(secret: bytes, threshold: int, points: Sequence[int],
          random_bytes: Callable[[int], bytes] = os.urandom) -> list[Share]:
    """Shares of `secret` at the evaluation points `points` (distinct, >= 1); any
    `threshold` of them reconstruct it. The polynomial's coefficients come from
    `random_bytes` (the OS's CSPRNG unless a test injects a seeded source)."""
    if not 2 <= threshold <= len(points):
        raise ValueError(f"threshold must be in [2, {len(points)}] for {len(points)} shares, got {threshold}")
    if len(set(points)) != len(points) or min(points) < 1:
        raise ValueError(f"evaluation points must be distinct and >= 1, got {list(points)}")
    value = int.from_bytes(secret, "big")
    assert value < PRIME, "secret too long for the field"
    coefficients = [value] + [_below_prime(random_bytes) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in points]


def _below_prime(random_bytes: Callable[[int], bytes]) -> int:
    """A uniform element of GF(PRIME): 521 random bits, drawn again in the rare case they
    reach PRIME (rejection keeps it uniform)."""
    while True:
        value = int.from_bytes(random_bytes(66), "big") & ((1 << 521) - 1)
        if value < PRIME:
            return value


def combine(shares: Sequence[Share], threshold: int, size: int = 32) -> bytes:
    """The secret (as `size` bytes) from at least `threshold` shares."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} share(s) cannot reconstruct a secret of threshold {threshold}")
    used = list(shares)[:threshold]
    xs = [s.x for s in used]
    if len(set(xs)) != len(xs):
        raise ValueError(f"shares must come from distinct points, got {xs}")
    secret = 0
    for i, share in enumerate(used):
        # Lagrange basis polynomial l_i(0) = prod_{j != i} x_j / (x_j - x_i)
        numerator, denominator = 1, 1
        for j, other in enumerate(xs):
            if j != i:
                numerator = numerator * other % PRIME
                denominator = denominator * (other - share.x) % PRIME
        secret = (secret + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >> (8 * size):
        raise ValueError("the shares do not reconstruct a secret of this size (altered, or of different secrets)")
    return secret.to_bytes(size, "big")


def _evaluate(coefficients: list[int], x: int) -> int:
    """Horner's rule mod PRIME."""
    out = 0
    for c in reversed(coefficients):
        out = (out * x + c) % PRIME
    return out


def encode(share: Share) -> bytes:
    """A share on the wire: 2 bytes of x, then 66 bytes of y."""
    return share.x.to_bytes(2, "big") + share.y.to_bytes(SHARE_BYTES, "big")


def decode(data: bytes) -> Share:
    if len(data) != 2 + SHARE_BYTES:
        raise ValueError(f"a share is {2 + SHARE_BYTES} bytes, got {len(data)}")
    return Share(int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big"))
