"""Instruction data: conversations per owner, rendered and tokenised into rows whose loss
mask covers the response only.

A builder returns `Conversations` (e.g. `instructions` reads local JSONL); the
federated view turns them into `InstructionRows` with the run's tokenizer
(`encode_conversations`): one row per conversation, right-padded with PAD to
`data.seq_len` (so positions count from 0 and the attention mask is `ids >= 0`),
the prompt never a target, responses cut at `seq_len` and counted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig
from fedray.data.arrow import matrix_column
from fedray.data.chat import ChatFormat, messages_of, response_mask
from fedray.data.datasets import DATASETS, DataIndex, DataInfo

PAD = -1
"""Id stored in padded positions (never attended to, never a target)."""


@dataclasses.dataclass(frozen=True)
class ChatExample:
    """One conversation, ending with the assistant's reply, and how to score an answer."""

    messages: tuple[dict, ...]
    reference: str
    """What a generated answer is compared with (exact match), or the verifier's answer."""
    entry: str = ""
    """JSON of the verifier's entry (`reasoning_gym`); empty: exact match."""


@dataclasses.dataclass(frozen=True)
class Conversations:
    """Conversations per owner, in a fixed owner order (a natural partition)."""

    owners: tuple[str, ...]
    examples: tuple[tuple[ChatExample, ...], ...]


@dataclasses.dataclass(frozen=True)
class InstructionRows:
    """Tokenised conversations, one per row, with the response-only loss mask."""

    ids: np.ndarray
    """int32 [rows, seq_len]: prompt, response, then PAD."""
    loss_mask: np.ndarray
    """bool [rows, seq_len]: True where the token is a response token (a target)."""
    prompt_len: np.ndarray
    """int32 [rows]: where the response starts (generation starts from ids[:prompt_len])."""
    owner: np.ndarray
    owner_names: tuple[str, ...]
    reference: np.ndarray
    """object [rows]: the answer a generation is scored against."""
    entry: np.ndarray
    """object [rows]: the verifier's entry as JSON ('' for exact match)."""
    vocab_size: int
    notes: tuple[str, ...] = ()
    """What was cut to fit `data.seq_len`, said once at start."""

    @property
    def groups(self) -> np.ndarray:
        return self.owner

    @property
    def info(self) -> DataInfo:
        seq_len = self.ids.shape[1]
        return DataInfo("instruct_lm", seq_len, self.vocab_size, vocab_size=self.vocab_size, seq_len=seq_len)

    def table(self, rows: np.ndarray) -> pa.Table:
        return instruction_table(self, rows)

    def index(self) -> DataIndex:
        """What planning the split needs: each row's owner (a natural partition's client)."""
        return DataIndex(self.owner, self.info, None, self.owner_names, {"owner": self.owner}, self.notes)


def instruction_table(data: InstructionRows, rows: np.ndarray) -> pa.Table:
    """`input_ids`, `loss_mask` (fixed-size lists), `owner`, `prompt_len`, and the
    strings generation is scored with: `task` (owner name), `reference`, `entry`."""
    return pa.table({
        "input_ids": matrix_column(data.ids[rows], np.int32),
        "loss_mask": matrix_column(data.loss_mask[rows], np.int8),
        "owner": pa.array(np.asarray(data.owner[rows], dtype=np.int64)),
        "prompt_len": pa.array(np.asarray(data.prompt_len[rows], dtype=np.int32)),
        "task": pa.array([data.owner_names[o] for o in data.owner[rows]], pa.string()),
        "reference": pa.array(list(data.reference[rows]), pa.string()),
        "entry": pa.array(list(data.entry[rows]), pa.string()),
    })


def encode_conversations(data: Conversations, tokenizer, cfg: DataConfig) -> InstructionRows:
    """Render every conversation with the chat format of `data.instruct`, tokenise, pad
    to `data.seq_len`; conversations whose prompt leaves no room for a response are dropped."""
    fmt = ChatFormat.for_tokenizer(tokenizer, cfg.instruct.template.value, cfg.instruct.system)
    seq_len = cfg.seq_len
    ids, masks, prompt_lens, owners, refs, entries = [], [], [], [], [], []
    cut_rows = cut_tokens = dropped = 0
    for owner, examples in enumerate(data.examples):
        for example in examples:
            prompt, response = fmt.encode(example.messages)
            if len(prompt) >= seq_len:
                dropped += 1
                continue
            mask, cut = response_mask(len(prompt), len(response), seq_len)
            row = np.full(seq_len, PAD, dtype=np.int32)
            both = np.concatenate([prompt, response])[:seq_len]
            row[: len(both)] = both
            cut_rows, cut_tokens = cut_rows + (cut > 0), cut_tokens + cut
            ids.append(row), masks.append(mask), prompt_lens.append(len(prompt)), owners.append(owner)
            refs.append(example.reference), entries.append(example.entry)
    total = sum(len(e) for e in data.examples)
    empty = sorted(set(data.owners) - {data.owners[o] for o in owners})
    if empty:
        raise ValueError(f"data.seq_len={seq_len}: every prompt of {empty} is longer; raise data.seq_len")
    notes = [f"data: {cut_rows} of {total} responses cut to fit data.seq_len={seq_len} ({cut_tokens} tokens); "
             f"{dropped} conversations dropped (prompt alone >= seq_len); rendered with {fmt.name}"]
    return InstructionRows(
        np.stack(ids), np.stack(masks), np.array(prompt_lens, dtype=np.int32), np.array(owners, dtype=np.int64),
        data.owners, np.array(refs, dtype=object), np.array(entries, dtype=object), tokenizer.vocab_size,
        tuple(notes))


# ---- reading local files ----------------------------------------------------------


@DATASETS.register("instructions")
def instruction_files(cfg: DataConfig) -> Conversations:
    """`data.path`: one .jsonl file (one owner; partition it with `iid`) or a folder whose
    .jsonl files or sub-folders are one owner each (`natural`). Records are alpaca
    (`instruction`, `input`, `output`) or chat (`messages`)."""
    if cfg.path is None:
        raise ValueError("data.path is required by data.dataset=instructions (a .jsonl file or a folder)")
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise ValueError(f"data.path: no such file or folder: {root}")
    entries = [root] if root.is_file() else sorted(p for p in root.iterdir() if not p.name.startswith("."))
    owners, examples = [], []
    for entry in entries:
        files = sorted(p for p in entry.rglob("*.jsonl") if p.is_file()) if entry.is_dir() else [entry]
        found = [e for f in files for e in read_jsonl(f)]
        if not found:
            raise ValueError(f"data.path: {entry} holds no conversations (.jsonl records)")
        owners.append(entry.stem if entry.is_file() else entry.name)
        examples.append(tuple(found))
    if not owners:
        raise ValueError(f"data.path: {root} is an empty folder")
    return Conversations(tuple(owners), tuple(examples))


def read_jsonl(path: Path) -> list[ChatExample]:
    """The conversations of one JSONL file; errors name the file and line."""
    if path.suffix != ".jsonl":
        raise ValueError(f"data.path: {path} is not a .jsonl file")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"data.path: {path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where} is not a JSON object")
        messages = messages_of(record, where)
        out.append(ChatExample(tuple(messages), messages[-1]["content"]))
    return out
