"""Fixed-width bit packing: small integers stored in exactly `width` bits each.

Quantised values (QSGD levels, the continuous-rate codec's row levels) need a few
bits, not a byte; packing them is what makes the encoded size on the wire the
size the bit-width promises. Little-endian bit order inside each byte.
"""

from __future__ import annotations

import numpy as np

MAX_WIDTH = 32


def packed_size(count: int, width: int) -> int:
    """Bytes that `count` values of `width` bits take once packed."""
    return (int(count) * int(width) + 7) // 8


def pack(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned integers (each < 2**width) as a uint8 array of `packed_size` bytes."""
    assert 0 < width <= MAX_WIDTH, width
    values = np.asarray(values, dtype=np.uint64).reshape(-1)
    assert values.size == 0 or int(values.max()) < (1 << width), "a value does not fit its width"
    shifts = np.arange(width, dtype=np.uint64)
    bits = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack(packed: np.ndarray, count: int, width: int) -> np.ndarray:
    """The `count` unsigned integers of `width` bits in `packed`, as int64."""
    assert 0 < width <= MAX_WIDTH, width
    if packed.size != packed_size(count, width):
        raise ValueError(f"{packed.size} packed bytes cannot hold {count} values of {width} bits")
    bits = np.unpackbits(packed, count=count * width, bitorder="little").reshape(count, width)
    return bits.astype(np.int64) @ (np.int64(1) << np.arange(width, dtype=np.int64))


def pack_signed(values: np.ndarray, width: int) -> np.ndarray:
    """Integers in [-(2**(width-1) - 1), 2**(width-1) - 1], offset to unsigned and packed."""
    offset = (1 << (width - 1)) - 1
    return pack(np.asarray(values, dtype=np.int64) + offset, width)


def unpack_signed(packed: np.ndarray, count: int, width: int) -> np.ndarray:
    offset = (1 << (width - 1)) - 1
    return unpack(packed, count, width) - offset


def signed_width(max_abs: int) -> int:
    """Bits for integers in [-max_abs, max_abs] (offset binary); 0 if max_abs is 0."""
    return 0 if max_abs <= 0 else int(max_abs).bit_length() + 1
