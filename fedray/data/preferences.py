"""`data.dataset: preferences`: local JSONL pairs `{prompt, chosen, rejected}` for DPO.

`data.path` is one .jsonl file (one owner) or a folder of them (one owner each, a
natural partition). Each pair becomes two token rows of `data.seq_len`, prompt then
completion, and the prompt's length, from which the task masks the prompt out: only
completion tokens are scored. A pair is the conversation (user: prompt, assistant:
completion) rendered by `fedray.data.chat.ChatFormat` with `data.instruct`'s template,
exactly as instruction tuning renders it, so DPO after SFT sees the same layout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig
from fedray.data.arrow import _rows, _rows_column, _values
from fedray.data.chat import ChatFormat
from fedray.data.datasets import DATASETS, DataIndex, DataInfo
from fedray.data.text import PAD

FIELDS = ("prompt", "chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class PreferenceTexts:
    """Pairs per owner, as read: `pairs[i]` are owner i's (prompt, chosen, rejected)."""

    owners: tuple[str, ...]
    pairs: tuple[tuple[tuple[str, str, str], ...], ...]


@dataclasses.dataclass(frozen=True)
class PreferencePairs:
    """Tokenised pairs, each tagged with its owner."""

    chosen: np.ndarray
    """int32 [pairs, seq_len]: prompt + chosen completion, PAD after it."""
    rejected: np.ndarray
    """int32 [pairs, seq_len]: prompt + rejected completion."""
    prompt_len: np.ndarray
    """int32 [pairs]: tokens of the prompt (the completion starts there)."""
    owner: np.ndarray
    owner_names: tuple[str, ...]
    vocab_size: int

    @property
    def groups(self) -> np.ndarray:
        return self.owner

    @property
    def info(self) -> DataInfo:
        seq_len = self.chosen.shape[1]
        return DataInfo("preference", seq_len, self.vocab_size, vocab_size=self.vocab_size, seq_len=seq_len)

    def index(self) -> DataIndex:
        return DataIndex(self.owner, self.info, None, self.owner_names, {"owner": self.owner})

    def table(self, rows: np.ndarray) -> pa.Table:
        return pa.table({
            "chosen": _rows_column(self.chosen[rows], np.int32, len(rows)),
            "rejected": _rows_column(self.rejected[rows], np.int32, len(rows)),
            "prompt_len": pa.array(self.prompt_len[rows].astype(np.int32)),
            "owner": pa.array(self.owner[rows].astype(np.int64)),
        })


def pair_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen, rejected, prompt_len) views of a preferences table."""
    return _rows(table, "chosen"), _rows(table, "rejected"), _values(table, "prompt_len")


def render(prompt: str, completion: str, fmt: ChatFormat) -> tuple[np.ndarray, int]:
    """Token ids of the conversation (user: `prompt`, assistant: `completion`) and the
    prompt's length: the prompt as the chat format renders it for generation, the
    completion with the template's end-of-turn marker (plain layout: the end token)."""
    prompt_ids, completion_ids = fmt.encode([{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": completion}])
    return np.concatenate([prompt_ids, completion_ids]).astype(np.int32), len(prompt_ids)


def tokenize_pairs(texts: PreferenceTexts, fmt: ChatFormat, seq_len: int) -> PreferencePairs:
    """Every pair as two PAD-filled rows of `seq_len`; a pair whose prompt leaves no room
    for a completion token is an error naming it (raise data.seq_len)."""
    chosen, rejected, prompt_len, owner = [], [], [], []
    for index, pairs in enumerate(texts.pairs):
        for number, (prompt, good, bad) in enumerate(pairs, start=1):
            rows = [render(prompt, completion, fmt) for completion in (good, bad)]
            start = rows[0][1]
            if start >= seq_len - 1:
                raise ValueError(f"data.seq_len={seq_len}: the prompt of pair {number} of {texts.owners[index]} "
                                 f"takes {start} tokens, leaving no room for its completions")
            for ids, out in zip((rows[0][0], rows[1][0]), (chosen, rejected)):
                row = np.full(seq_len, PAD, dtype=np.int32)
                row[: min(len(ids), seq_len)] = ids[:seq_len]
                out.append(row)
            prompt_len.append(start)
            owner.append(index)
    return PreferencePairs(np.stack(chosen), np.stack(rejected), np.asarray(prompt_len, np.int32),
                           np.asarray(owner, np.int64), texts.owners, fmt.tokenizer.vocab_size)


@DATASETS.register("preferences")
def preferences(cfg: DataConfig) -> PreferenceTexts:
    """`data.path`: a .jsonl file of `{prompt, chosen, rejected}` records (one owner) or a
    folder of such files (one owner each)."""
    if cfg.path is None:
        raise ValueError("data.path is required by data.dataset=preferences (a .jsonl file or a folder of them)")
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise ValueError(f"data.path: no such file or folder: {root}")
    files = [root] if root.is_file() else sorted(root.glob("*.jsonl"))
    if not files:
        raise ValueError(f"data.path: {root} holds no .jsonl file")
    return PreferenceTexts(tuple(f.stem for f in files), tuple(_read_pairs(f) for f in files))


def _read_pairs(path: Path) -> tuple[tuple[str, str, str], ...]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"data.path: {path}:{number} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in FIELDS):
            raise ValueError(f"data.path: {path}:{number} needs string fields {list(FIELDS)}")
        pairs.append(tuple(record[k] for k in FIELDS))
    if not pairs:
        raise ValueError(f"data.path: {path} holds no pairs")
    return tuple(pairs)
