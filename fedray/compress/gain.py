"""The continuous-rate codec: gain vectors per row, interpolated between anchors by l in [0, 1].

The idea is G-VAE's (Cui et al., "G-VAE: A Continuously Variable Rate Deep Image
Compression Framework", arXiv 2003.02012): one codec reaches any rate through a
*gain unit*, a per-channel gain vector m applied before quantisation and
inverted after, and gains interpolated between a few anchors, m = m_a^l m_b^(1-l),
give every rate in between. Transferred to model updates:

- the channels are **rows**: a tensor's first-axis slices (a LoRA A's rows are
  its rank components), except LoRA B (d_out x r), whose rows are its r columns,
  one per rank; without a `ParamSpec` (`ctx.spec`), blocks of 256 values;
- the **gains come from the update's statistics**: row r's values are scaled by
  m_r / s_r (s_r its largest magnitude) and rounded to integers in [-m_r, m_r].
  At an anchor of b bits the widest row gets M = 2^(b-1) - 1 levels and every
  row m_r = M s_r / S (S the largest s_r): one quantisation step S / M for all
  rows, which is what reverse water-filling prescribes for a mean-squared error
  (rate goes where the magnitudes are). Rows whose values all round to zero are
  not sent (so low anchors are also sparse); each sent row's integers are
  packed at the bits its own largest level needs;
- **l** moves between anchors (`bits`, e.g. 2, 4, 8) geometrically, exactly
  G-VAE's interpolation per row. Every m_r grows with l, so every integer's
  magnitude, every row's bit-width and the set of rows sent do too: the encoded
  bytes are monotone in l, and computable from the row maxima alone.

`rate` is a fixed l, or `auto`: the server sends each client the bytes its
upload may take (`upload_bytes` in its instructions; `fedray.compress.rate`) and
the client takes the largest l that fits. Error feedback keeps what rounding
and dropped rows lost.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from fedray.compress.bits import pack_signed, packed_size, unpack_signed
from fedray.compress.codec import CODECS, Codec, Encoded, codec_transform, expect
from fedray.transforms import UpdateTransform
from fedray.types import Context, ParamSpec

FALLBACK_ROW = 256
"""Row length when the codec is not told the tensor layout (e.g. on the broadcast)."""
_BISECTIONS = 30
RATE_AUTO = "auto"


# ---- rows ------------------------------------------------------------------------


def row_table(spec: ParamSpec | None, size: int) -> np.ndarray:
    """(num_tensors, 3) int32: rows, row length, 1 if the rows are the tensor's columns."""
    if spec is None or spec.num_params != size:
        full, rest = divmod(size, FALLBACK_ROW)
        table = [(full, FALLBACK_ROW, 0)] if full else []
        return np.array(table + ([(1, rest, 0)] if rest else []), dtype=np.int32).reshape(-1, 3)
    table = []
    for name, shape in zip(spec.names, spec.shapes):
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0:
            continue
        if len(shape) < 2:
            table.append((1, n, 0))
        elif "lora_B" in name:
            table.append((shape[-1], n // shape[-1], 1))  # one row per rank component
        else:
            table.append((shape[0], n // shape[0], 0))
    return np.array(table, dtype=np.int32).reshape(-1, 3)


@dataclasses.dataclass(frozen=True)
class Rows:
    """The rows of a flat update: their lengths and, if some are columns, the order of
    coordinates that makes every row contiguous."""

    lengths: np.ndarray
    order: np.ndarray | None

    @classmethod
    def of(cls, table: np.ndarray) -> "Rows":
        lengths = np.repeat(table[:, 1].astype(np.int64), table[:, 0])
        if not table[:, 2].any():
            return cls(lengths, None)
        parts, offset = [], 0
        for rows, length, columns in table.tolist():
            index = offset + np.arange(rows * length, dtype=np.int64)
            parts.append(index.reshape(length, rows).T.reshape(-1) if columns else index)
            offset += rows * length
        return cls(lengths, np.concatenate(parts))

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def absmax(self, x: np.ndarray) -> np.ndarray:
        """Largest magnitude of every row (x in row order)."""
        return np.maximum.reduceat(np.abs(x), self.starts) if x.size else np.zeros(0, np.float32)


# ---- levels, widths and bytes as functions of the step -----------------------------


def _widths(absmax: np.ndarray, step: float) -> np.ndarray:
    """Bits each row's integers take at this step (0: the row is not sent)."""
    top = np.rint(absmax / step).astype(np.int64) if step > 0 else np.zeros(absmax.shape, np.int64)
    widths = np.zeros(top.shape, dtype=np.int64)
    sent = top > 0
    widths[sent] = np.floor(np.log2(top[sent])).astype(np.int64) + 2  # bit_length + a sign slot
    return widths


def encoded_bytes(absmax: np.ndarray, lengths: np.ndarray, num_tensors: int, step: float) -> int:
    """`GainPayload.num_bytes` at this step, from the row maxima alone."""
    widths = _widths(absmax, step)
    sent = widths > 0
    packed = sum(packed_size(int(lengths[widths == w].sum()), int(w)) for w in np.unique(widths[sent]))
    return 4 + 4 + 12 * num_tensors + packed_size(absmax.size, 1) + int(sent.sum()) + packed


def anchor_levels(bits: Sequence[int]) -> np.ndarray:
    """Levels of the widest row at each anchor, M = 2^(b-1) - 1."""
    return np.array([(1 << (b - 1)) - 1 for b in bits], dtype=np.float64)


def levels_at(rate: float, anchors: np.ndarray) -> float:
    """M(l): geometric interpolation between neighbouring anchors (m_a^(1-t) m_b^t)."""
    position = min(max(rate, 0.0), 1.0) * (len(anchors) - 1)
    i = min(int(position), len(anchors) - 2)
    t = position - i
    return float(anchors[i] ** (1 - t) * anchors[i + 1] ** t)


def step_at(top: float, rate: float, anchors: np.ndarray) -> float:
    """The quantisation step S / M(l), rounded to the float32 that travels."""
    return float(np.float32(top / levels_at(rate, anchors))) if top > 0 else 0.0


def rate_for_budget(absmax: np.ndarray, lengths: np.ndarray, num_tensors: int, anchors: np.ndarray,
                    budget: float) -> float:
    """The largest l whose encoding fits `budget` bytes (0 if even l = 0 does not)."""
    top = float(absmax.max()) if absmax.size else 0.0
    if top == 0.0:
        return 1.0

    def size(rate: float) -> int:
        return encoded_bytes(absmax, lengths, num_tensors, step_at(top, rate, anchors))

    if size(1.0) <= budget:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (middle, high) if size(middle) <= budget else (low, middle)
    return low


# ---- the codec -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GainPayload(Encoded):
    step: float
    """The quantisation step S / M(l) (float32)."""
    count: int
    table: np.ndarray
    """int32 (num_tensors, 3): each tensor's rows, row length, rows-are-columns flag."""
    sent: np.ndarray
    """One bit per row (packed): the row has a non-zero integer."""
    widths: np.ndarray
    """uint8 per sent row: bits of its integers."""
    levels: tuple
    """Per distinct width, ascending: the integers of the sent rows of that width, packed."""


def _check_args(rate: float | str, bits: Sequence[int]) -> np.ndarray:
    if isinstance(rate, str):
        if rate != RATE_AUTO:
            raise ValueError(f"rate must be a number in [0, 1] or 'auto', got {rate!r}")
    elif not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1] (or 'auto'), got {rate}")
    bits = list(bits)
    if len(bits) < 2 or any(not isinstance(b, int) or not 2 <= b <= 16 for b in bits) or bits != sorted(set(bits)):
        raise ValueError(f"bits must list at least two increasing anchor bit-widths in [2, 16], got {bits}")
    return anchor_levels(bits)


@CODECS.register("gain")
def gain(rate: float | str = 1.0, bits: list = (2, 4, 8), target_s: float | None = None,
         error_feedback: bool = True) -> UpdateTransform:
    """Continuous-rate quantisation (module docstring). `rate`: l in [0, 1] or `auto`
    (the client's `upload_bytes` budget picks it); `bits`: the anchors; `target_s`:
    with `auto`, the simulated seconds a round should last (default: the deadline,
    else the slowest selected client's download and compute)."""
    anchors = _check_args(rate, bits)
    if target_s is not None and not target_s > 0:
        raise ValueError(f"target_s must be > 0 or null, got {target_s}")

    def encode(x: np.ndarray, ctx: Context) -> GainPayload:
        table = row_table(ctx.spec, x.size)
        rows = Rows.of(table)
        ordered = x if rows.order is None else x[rows.order]
        absmax = rows.absmax(ordered)
        top = float(absmax.max()) if absmax.size else 0.0
        level = rate if not isinstance(rate, str) else rate_for_budget(
            absmax, rows.lengths, len(table), anchors, float(ctx.config.get("upload_bytes", np.inf)))
        step = np.float32(step_at(top, level, anchors))
        widths = _widths(absmax, float(step))
        integers = np.rint(ordered / step).astype(np.int64) if step > 0 else np.zeros(x.size, np.int64)
        row_width = np.repeat(widths, rows.lengths)
        packed = tuple(pack_signed(integers[row_width == w], int(w)) for w in np.unique(widths[widths > 0]))
        return GainPayload(float(step), x.size, table, np.packbits(widths > 0, bitorder="little"),
                           widths[widths > 0].astype(np.uint8), packed)

    return codec_transform(Codec(encode, decode_gain), error_feedback)


def decode_gain(payload, ctx: Context) -> np.ndarray:
    """The update a `GainPayload` stands for (float32, original coordinate order)."""
    p = expect(payload, GainPayload)
    rows = Rows.of(p.table)
    if int(rows.lengths.sum()) != p.count:
        raise ValueError(f"row table covers {int(rows.lengths.sum())} values, not {p.count}")
    sent = np.unpackbits(p.sent, count=rows.lengths.size, bitorder="little").astype(bool)
    widths = np.zeros(rows.lengths.size, dtype=np.int64)
    widths[sent] = p.widths
    row_width = np.repeat(widths, rows.lengths)
    ordered = np.zeros(p.count, dtype=np.float32)
    distinct = np.unique(widths[sent])
    if len(distinct) != len(p.levels):
        raise ValueError(f"{len(p.levels)} packed groups for {len(distinct)} widths")
    for w, packed in zip(distinct, p.levels):
        where = row_width == w
        ordered[where] = unpack_signed(packed, int(where.sum()), int(w)).astype(np.float32) * np.float32(p.step)
    if rows.order is None:
        return ordered
    out = np.empty_like(ordered)
    out[rows.order] = ordered
    return out
