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

    def save_pretrained(self, folder) -> None:
        """Write tokenizer files that `transformers.AutoTokenizer` loads with the same ids
        (so an exported model needs no fedray), and the plain chat layout as its template."""
        byte_level_hf().save_pretrained(folder)


PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] | capitalize }}:\n{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
"""`fedray.data.chat`'s plain layout as a Jinja chat template (the prompt renders alike)."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character of every byte (what byte-level BPE files store)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}


def byte_level_hf():
    """The byte tokenizer as a transformers fast tokenizer: byte b is id b, 256 ends a text."""
    from tokenizers import Tokenizer as RustTokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: b for b, char in _bytes_to_unicode().items()}
    vocab["<|endoftext|>"] = ByteTokenizer.eos_id
    inner = RustTokenizer(models.BPE(vocab=vocab, merges=[]))
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    inner.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=inner, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = PLAIN_CHAT_TEMPLATE
    return fast


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

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens left out."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


TOKENIZERS: Registry[Callable[[ModelConfig], Tokenizer]] = Registry("tokenizer")
"""`data.tokenizer` -> builder taking the model section (a model's tokenizer lives
with its checkpoint; `model` is registered by `fedray.models.hf`)."""


@TOKENIZERS.register("byte")
def byte_tokenizer(model: ModelConfig) -> Tokenizer:
    """The project's byte-level tokenizer (the model section is not needed)."""
    return ByteTokenizer()
