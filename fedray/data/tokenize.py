"""Tokenizers for text datasets: a byte-level one in the project, or a model's own."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import ModelConfig


class Tokenizer(Protocol):
    """Turns documents into token ids for packing."""

    vocab_size: int
    """Number of token ids; a model's embedding must have at least this many rows."""
    eos_id: int
    """Appended after every document when documents are packed together."""

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, without special tokens."""


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255 and 256 ends a document: no vocabulary file, no
    unknown tokens, and the same ids on every machine (for tests and tiny models)."""

    vocab_size = 257
    eos_id = 256

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A transformers tokenizer behind the `Tokenizer` protocol."""

    def __init__(self, tokenizer):
        if tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer {tokenizer.name_or_path} defines no end-of-sequence token")
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.eos_id = int(tokenizer.eos_token_id)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [np.asarray(i, dtype=np.int32) for i in ids]


TOKENIZERS: Registry[Callable[[ModelConfig], Tokenizer]] = Registry("tokenizer")
"""`data.tokenizer` -> builder taking the model section (a model's tokenizer lives
with its checkpoint; `model` is registered by `fedray.models.hf`)."""


@TOKENIZERS.register("byte")
def byte_tokenizer(model: ModelConfig) -> Tokenizer:
    """The project's byte-level tokenizer (the model section is not needed)."""
    return ByteTokenizer()
