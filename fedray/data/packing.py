"""Packing for instruction tuning (`data.instruct.packing`): several short conversations
in one row of `data.seq_len`, attention kept inside each conversation.

A padded row of a short conversation is mostly PAD, computed and thrown away; packing
puts conversations one after another until the next one does not fit. Each one's
position ids restart at 0, and the model is called with those position ids and no
2D attention mask: transformers (5.x, models whose mask comes from
`masking_utils.create_causal_mask`, e.g. llama, qwen2, mistral) reads a restart of the
position ids as a sequence boundary and builds a block-diagonal causal mask, the way
flash-attention's packed ("varlen") format works. The PAD tail of a row is one more
block of its own, so no real token attends to it. The loss mask is carried over
unchanged: response tokens only, so the loss of a packed batch is that of the same
conversations padded one per row.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedray.data.text import PAD


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Conversations packed into rows; every array is [rows, seq_len]."""

    ids: np.ndarray
    """int64: the conversations' tokens one after another, PAD after the last."""
    loss_mask: np.ndarray
    """bool: each conversation's response tokens, as in its padded row."""
    position_ids: np.ndarray
    """int64: 0, 1, ... from the start of each conversation (and of the PAD tail)."""
    conversations: np.ndarray
    """int64 [rows]: how many conversations each row holds."""


def pack_rows(ids: np.ndarray, loss_mask: np.ndarray) -> PackedRows:
    """Pack right-padded rows (one conversation each, PAD after it) in their order: a
    conversation goes into the current row if it fits, else starts the next one."""
    seq_len = ids.shape[1]
    lengths = (ids >= 0).sum(1)
    rows: list[list[int]] = []
    used = seq_len
    for index, length in enumerate(lengths):
        if used + length > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += int(length)
    out_ids = np.full((len(rows), seq_len), PAD, dtype=np.int64)
    out_mask = np.zeros((len(rows), seq_len), dtype=bool)
    positions = np.zeros((len(rows), seq_len), dtype=np.int64)
    for r, members in enumerate(rows):
        start = 0
        for index in members:
            n = int(lengths[index])
            out_ids[r, start:start + n] = ids[index, :n]
            out_mask[r, start:start + n] = loss_mask[index, :n]
            positions[r, start:start + n] = np.arange(n)
            start += n
        positions[r, start:] = np.arange(seq_len - start)
    return PackedRows(out_ids, out_mask, positions, np.array([len(m) for m in rows], dtype=np.int64))
