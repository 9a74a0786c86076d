"""Codecs: an encoder and its decoder, lifted into update transforms, optionally with error feedback.

A `Codec` is a pair of pure functions, `encode(x, ctx) -> payload` and
`decode(payload, ctx) -> x_hat`; the payload is what travels, and its size is
the real number of bytes on the wire (`Encoded.num_bytes`: every array's bytes,
4 per scalar header field). `codec_transform` makes a codec the last step of the
client chain: an `UpdateTransform` whose `apply` encodes and whose `decode` the
server runs before checking and aggregating the update.

Error feedback (Seide et al. 2014; Karimireddy et al., "Error Feedback Fixes
SignSGD", ICML 2019): the client adds what earlier rounds failed to send to its
new update before encoding, and keeps the new difference,

    corrected = update + residual;  sent = decode(encode(corrected));
    residual' = corrected - sent,

so Σ sent + residual = Σ update over the rounds: nothing is lost, only delayed.
The residual is transform state, kept per client id in the server's copy, so it
survives checkpoints, resume and actor restarts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.transforms import UpdateTransform
from fedray.types import Context, payload_bytes


class Codec(NamedTuple):
    """`encode(x, ctx) -> payload`, `decode(payload, ctx) -> float32 array`; pure."""

    encode: Callable[[np.ndarray, Context], Any]
    decode: Callable[[Any, Context], np.ndarray]


class Encoded:
    """Base of the encoded payloads (frozen dataclasses): its size on the wire is the
    sum of its arrays' bytes, 4 bytes per scalar field (a float32 or int32 header),
    and nested payloads' sizes."""

    @property
    def num_bytes(self) -> int:
        total = 0
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            total += 4 if isinstance(value, (int, float, np.number)) else payload_bytes(value)
        return total


def codec_transform(codec: Codec, error_feedback: bool = False) -> UpdateTransform:
    """The codec as the client chain's last step (state: the residual with error feedback)."""
    if not error_feedback:
        return UpdateTransform(lambda params: (), lambda u, s, p, ctx: (codec.encode(u, ctx), s), codec.decode)

    def init(params: np.ndarray) -> np.ndarray:
        return np.zeros(params.shape, dtype=np.float32)

    def apply(update: np.ndarray, residual: np.ndarray, params: np.ndarray, ctx: Context):
        if residual.shape != update.shape:  # a client whose layout changed starts afresh
            residual = np.zeros(update.shape, dtype=np.float32)
        corrected = update + residual
        payload = codec.encode(corrected, ctx)
        return payload, corrected - codec.decode(payload, ctx)

    return UpdateTransform(init, apply, codec.decode)


def identity_codec() -> Codec:
    """Float32 as it is (`none`)."""
    return Codec(lambda x, ctx: x, lambda payload, ctx: expect(payload, np.ndarray))


CODECS: Registry[Callable[..., UpdateTransform]] = Registry("codec", returns=UpdateTransform)
"""Codecs by name for `clients.codec`, `server.codec` and the content rules
(`{name, args}`; `args` are the factory's keyword arguments)."""

PARAMS_CODECS = frozenset({"none", "fp16", "bf16", "int8", "gain"})
"""Codecs that may encode the broadcast parameters (`server.codec`): they keep every
coordinate and need no per-receiver state. Sparsifiers and sign drop information
that only error feedback on the sender's side makes up for."""


@CODECS.register("none")
def none() -> UpdateTransform:
    """No compression: float32 on the wire."""
    return codec_transform(identity_codec())


def expect(payload: Any, kind: type) -> Any:
    """`payload` if it is a `kind`; else a ValueError, so the server rejects the update
    (a client cannot stop the run by sending garbage)."""
    if not isinstance(payload, kind):
        raise ValueError(f"expected a payload of type {kind.__name__}, got {type(payload).__name__}")
    return payload


def check_fraction(name: str, value: float) -> None:
    """A share of the coordinates: in (0, 1]."""
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value}")


def check_block(block: int | None) -> None:
    if block is not None and block < 1:
        raise ValueError(f"block must be >= 1 (or null: the whole update), got {block}")
