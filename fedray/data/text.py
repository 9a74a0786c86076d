"""Text datasets: documents grouped by their natural owner, tokenised and packed.

A `TextCorpus` is raw text per owner (a file, a folder, a Shakespeare role).
`pack` turns it into `TokenBlocks`: every owner's documents are tokenised, joined
with an end-of-document token and cut into rows of `seq_len` ids, the last row
of each owner padded with -1 (never a target). Rows never mix owners, so a
natural partition is a grouping of rows by owner.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig
from fedray.data.arrow import tokens_table
from fedray.data.datasets import DATASETS, DataIndex, DataInfo
from fedray.data.tokenize import Tokenizer

PAD = -1
"""Id stored in padded positions; the causal-LM task masks it out."""

_SUFFIXES = (".txt", ".jsonl")


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """Documents per owner, in a fixed owner order."""

    owners: tuple[str, ...]
    documents: tuple[tuple[str, ...], ...]
    """documents[i] are owner i's texts, in reading order."""

    def num_chars(self) -> np.ndarray:
        """Characters of text per owner (how `data.max_owners` ranks them)."""
        return np.array([sum(len(d) for d in docs) for docs in self.documents], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class TokenBlocks:
    """Packed sequences ready for a causal LM, each tagged with its owner."""

    ids: np.ndarray
    """int32 [rows, seq_len]; PAD in the unused tail of an owner's last row."""
    owner: np.ndarray
    """int64 [rows]: index into `owner_names`."""
    owner_names: tuple[str, ...]
    vocab_size: int

    @property
    def groups(self) -> np.ndarray:
        """What the held-out split stratifies on and `natural` partitions by."""
        return self.owner

    @property
    def info(self) -> DataInfo:
        return text_info(self.ids.shape[1], self.vocab_size)

    def table(self, rows: np.ndarray) -> pa.Table:
        return tokens_table(self.ids[rows], self.owner[rows])

    def index(self) -> DataIndex:
        return DataIndex(self.owner, self.info, None, self.owner_names, {"owner": self.owner})


def text_info(seq_len: int, vocab_size: int) -> DataInfo:
    """The causal-LM task over rows of `seq_len` tokens: the next token is one of
    `vocab_size` classes."""
    return DataInfo("causal_lm", seq_len, vocab_size, vocab_size=vocab_size, seq_len=seq_len)


def select_owners(corpus: TextCorpus, cfg: DataConfig) -> TextCorpus:
    """Apply `data.owners` (keep those named) then `data.max_owners` (keep the largest)."""
    keep = np.arange(len(corpus.owners))
    if cfg.owners:
        index = {name: i for i, name in enumerate(corpus.owners)}
        unknown = [o for o in cfg.owners if o not in index]
        if unknown:
            raise ValueError(
                f"data.owners: no owner named {unknown}; owners look like {list(corpus.owners[:5])}"
            )
        keep = np.array(sorted({index[o] for o in cfg.owners}))
    if cfg.max_owners is not None and cfg.max_owners < len(keep):
        size = corpus.num_chars()[keep]
        largest = np.argsort(-size, kind="stable")[: cfg.max_owners]
        keep = np.sort(keep[largest])
    return TextCorpus(
        tuple(corpus.owners[i] for i in keep), tuple(corpus.documents[i] for i in keep)
    )


def pack(corpus: TextCorpus, tokenizer: Tokenizer, seq_len: int) -> TokenBlocks:
    """Tokenise each owner's documents, end each with EOS, cut into rows of seq_len."""
    rows, owners = [], []
    for i, docs in enumerate(corpus.documents):
        pieces = []
        for ids in tokenizer.encode(docs):
            pieces += [ids, np.array([tokenizer.eos_id], dtype=np.int32)]
        stream = np.concatenate(pieces)
        padded = np.full(-(-len(stream) // seq_len) * seq_len, PAD, dtype=np.int32)
        padded[: len(stream)] = stream
        rows.append(padded.reshape(-1, seq_len))
        owners.append(np.full(len(rows[-1]), i, dtype=np.int64))
    return TokenBlocks(np.concatenate(rows), np.concatenate(owners), corpus.owners, tokenizer.vocab_size)


# ---- reading local files ----------------------------------------------------------


@DATASETS.register("text")
def text_files(cfg: DataConfig) -> TextCorpus:
    """`data.path`: one .txt/.jsonl file (one owner) or a folder of them, where each
    file or sub-folder is one owner (named after it), as a natural partition."""
    if cfg.path is None:
        raise ValueError("data.path is required by data.dataset=text (a .txt/.jsonl file or a folder)")
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise ValueError(f"data.path: no such file or folder: {root}")
    entries = [root] if root.is_file() else sorted(p for p in root.iterdir() if not p.name.startswith("."))
    owners, documents = [], []
    for entry in entries:
        files = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
        docs = [d for f in files for d in _read_documents(f, cfg.text_field) if d.strip()]
        if not docs:
            raise ValueError(f"data.path: {entry} holds no text")
        owners.append(entry.stem if entry.is_file() else entry.name)
        documents.append(tuple(docs))
    if not owners:
        raise ValueError(f"data.path: {root} is an empty folder")
    return TextCorpus(tuple(owners), tuple(documents))


def _read_documents(path: Path, field: str) -> list[str]:
    if path.suffix not in _SUFFIXES:
        raise ValueError(f"data.path: {path} is not one of {list(_SUFFIXES)}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [text]
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"data.path: {path}:{number} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise ValueError(f"data.path: {path}:{number} has no string field {field!r} (data.text_field)")
        docs.append(record[field])
    return docs
