"""Quantising codecs: fp16, bf16, blockwise int8, QSGD and scaled sign.

Every coordinate travels, in fewer bits. Random rounding draws from `ctx.rng`,
so a client's encoding is reproducible whichever actor runs it, and a resumed
run draws the same numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedray.compress.bits import pack, pack_signed, signed_width, unpack, unpack_signed
from fedray.compress.codec import CODECS, Codec, Encoded, check_block, codec_transform, expect
from fedray.transforms import UpdateTransform
from fedray.types import Context

_RNG_TAG = 0x0C0DEC


def blocks(x: np.ndarray, block: int | None) -> np.ndarray:
    """`x` zero-padded to whole blocks, as a (num_blocks, block) view; None: one block."""
    size = x.size if block is None else block
    size = max(size, 1)
    rows = -(-x.size // size)
    if rows * size == x.size:
        return x.reshape(rows, size)
    padded = np.zeros(rows * size, dtype=np.float32)
    padded[: x.size] = x
    return padded.reshape(rows, size)


# ---- fp16 / bf16 ---------------------------------------------------------------


@CODECS.register("fp16")
def fp16() -> UpdateTransform:
    """IEEE half precision (2 bytes a value; |x| above 65504 becomes inf and is rejected)."""
    def decode(payload, ctx):
        return expect(payload, np.ndarray).astype(np.float32)

    return codec_transform(Codec(lambda x, ctx: x.astype(np.float16), decode))


@CODECS.register("bf16")
def bf16() -> UpdateTransform:
    """bfloat16: float32's exponent, 8 bits of mantissa (2 bytes a value), rounded to
    nearest even; the range of float32, so nothing overflows."""
    def encode(x: np.ndarray, ctx: Context) -> np.ndarray:
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
        return (rounded >> np.uint32(16)).astype(np.uint16)

    def decode(payload, ctx):
        return (expect(payload, np.ndarray).astype(np.uint32) << np.uint32(16)).view(np.float32)

    return codec_transform(Codec(encode, decode))


# ---- blockwise int8 ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Int8Blocks(Encoded):
    values: np.ndarray
    """int8, one per coordinate."""
    scales: np.ndarray
    """float32 per block: absmax / 127."""


@CODECS.register("int8")
def int8(block: int = 256, stochastic: bool = True) -> UpdateTransform:
    """8 bits a value plus one float32 scale per `block` values (absmax / 127). With
    `stochastic` rounding the error of each value is below one step (scale) and
    unbiased; without, at most half a step."""
    check_block(block)

    def encode(x: np.ndarray, ctx: Context) -> Int8Blocks:
        view = blocks(x, block)
        scales = (np.abs(view).max(axis=1) / np.float32(127)).astype(np.float32)
        safe = np.where(scales > 0, scales, np.float32(1))[:, None]
        scaled = view / safe
        if stochastic:
            scaled = np.floor(scaled + ctx.rng(_RNG_TAG).random(scaled.shape, dtype=np.float32))
        else:
            scaled = np.rint(scaled)
        values = np.clip(scaled, -127, 127).astype(np.int8).reshape(-1)[: x.size]
        return Int8Blocks(values, scales)

    def decode(payload, ctx) -> np.ndarray:
        p = expect(payload, Int8Blocks)
        n = p.values.size
        if p.scales.size != -(-n // block):
            raise ValueError(f"{p.scales.size} scales for {n} values in blocks of {block}")
        return (blocks(p.values.astype(np.float32), block) * p.scales[:, None]).reshape(-1)[:n]

    return codec_transform(Codec(encode, decode))


# ---- QSGD ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QSGDPayload(Encoded):
    norms: np.ndarray
    """float32 L2 norm per bucket."""
    levels: np.ndarray
    """Signed levels in [-s, s], packed at `signed_width(s)` bits each."""
    count: int


@CODECS.register("qsgd")
def qsgd(levels: int = 7, bucket: int = 128) -> UpdateTransform:
    """QSGD (Alistarh et al., NeurIPS 2017): per bucket of `bucket` values, each |v_i| /
    ||v|| is rounded at random to one of `levels` + 1 evenly spaced points, so that
    Q(v) is unbiased with E||Q(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2
    (d = bucket size, s = levels). Levels travel in ceil(log2(s + 1)) + 1 bits."""
    if not 1 <= levels <= 2**15:
        raise ValueError(f"levels must be in [1, 32768], got {levels}")
    check_block(bucket)
    width = signed_width(levels)

    def encode(x: np.ndarray, ctx: Context) -> QSGDPayload:
        view = blocks(x, bucket)
        norms = np.sqrt(np.einsum("ij,ij->i", view, view, dtype=np.float64)).astype(np.float32)
        safe = np.where(norms > 0, norms, np.float32(1))[:, None]
        scaled = np.abs(view) / safe * np.float32(levels)
        low = np.floor(scaled)
        up = ctx.rng(_RNG_TAG).random(scaled.shape, dtype=np.float32) < (scaled - low)
        level = np.minimum(low + up, levels) * np.sign(view)
        return QSGDPayload(norms, pack_signed(level.reshape(-1)[: x.size].astype(np.int64), width), x.size)

    def decode(payload, ctx) -> np.ndarray:
        p = expect(payload, QSGDPayload)
        level = unpack_signed(p.levels, p.count, width).astype(np.float32)
        view = blocks(level, bucket)
        if view.shape[0] != p.norms.size:
            raise ValueError(f"{p.norms.size} norms for {p.count} values in buckets of {bucket}")
        return (view * (p.norms / np.float32(levels))[:, None]).reshape(-1)[: p.count]

    return codec_transform(Codec(encode, decode))


# ---- scaled sign ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SignPayload(Encoded):
    signs: np.ndarray
    """One bit per value (1: non-negative), packed."""
    scales: np.ndarray
    """float32 per block: the mean |x| of the block."""
    count: int


@CODECS.register("sign")
def sign(block: int | None = None, error_feedback: bool = True) -> UpdateTransform:
    """1 bit a value times the block's mean magnitude ||x||_1 / d (EF-SignSGD,
    Karimireddy et al. 2019; error feedback on by default: without it the sign is biased)."""
    check_block(block)

    def encode(x: np.ndarray, ctx: Context) -> SignPayload:
        view = blocks(x, block)
        size = view.shape[1]
        scales = np.abs(view).sum(axis=1, dtype=np.float64).astype(np.float32)
        last = x.size - (view.shape[0] - 1) * size  # the padded block's real length
        scales /= np.array([size] * (view.shape[0] - 1) + [last], dtype=np.float32)
        return SignPayload(pack(x >= 0, 1), scales, x.size)

    def decode(payload, ctx) -> np.ndarray:
        p = expect(payload, SignPayload)
        signs = unpack(p.signs, p.count, 1).astype(np.float32) * 2 - 1
        view = blocks(signs, block or p.count)
        if view.shape[0] != p.scales.size:
            raise ValueError(f"{p.scales.size} scales for {p.count} values")
        return (view * p.scales[:, None]).reshape(-1)[: p.count]

    return codec_transform(Codec(encode, decode), error_feedback)
