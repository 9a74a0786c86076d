"""Chat rendering and response masking: a conversation becomes prompt ids and response ids.

One small API shared by everything that trains on conversations (instruction
tuning, preference pairs):

    fmt = ChatFormat.for_tokenizer(tokenizer, template="auto")
    prompt_ids, response_ids = fmt.encode(messages)   # messages end with the assistant's reply
    fmt.prompt_ids(messages[:-1])                      # what generation starts from

The prompt is every message before the final assistant turn, rendered with the
tokenizer's chat template (`add_generation_prompt=True`), or with a plain
`### User:` / `### Assistant:` layout when the tokenizer has none (the byte-level
tokenizer). The response is the rest of the fully rendered conversation, so it
carries the template's own end-of-turn marker (plain: the tokenizer's end token)
and a model learns to stop. Prompt and response are tokenised separately, so the
boundary between masked and trained tokens is exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

Message = Mapping[str, str]
"""`{"role": "system" | "user" | "assistant", "content": str}`."""

_ROLES = ("system", "user", "assistant")


def messages_of(record: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    """A conversation from one JSONL record: alpaca fields (`instruction`, optional
    `input`, `output`, optional `system`) or chat `messages` ending with the assistant."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)
                for m in messages):
            raise ValueError(f"{where}: `messages` must be a list of {{role, content}} with role one of {list(_ROLES)}")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's reply (the response trained on)")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    fields = ("instruction", "output")
    if not all(isinstance(record.get(k), str) for k in fields):
        raise ValueError(f"{where}: a record needs string fields `instruction` and `output` (alpaca) "
                         "or a `messages` list (chat)")
    user = record["instruction"]
    if isinstance(record.get("input"), str) and record["input"].strip():
        user = f"{user}\n\n{record['input']}"
    out = [{"role": "system", "content": record["system"]}] if isinstance(record.get("system"), str) else []
    return out + [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """How a tokenizer's conversations are rendered and split into prompt and response."""

    tokenizer: Any
    """A `fedray.data.tokenize.Tokenizer` (with `encode`, `eos_id`)."""
    hf: Any = None
    """The transformers tokenizer whose chat template renders; None: the plain layout."""
    system: str | None = None
    """Put first in every conversation that opens without a system message."""

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, template: str = "auto", system: str | None = None) -> "ChatFormat":
        """`template`: `auto` uses the tokenizer's chat template where it has one; `plain` never."""
        inner = getattr(tokenizer, "tokenizer", None)
        has_template = inner is not None and getattr(inner, "chat_template", None)
        return cls(tokenizer, inner if template == "auto" and has_template else None, system)

    @property
    def name(self) -> str:
        return "chat_template" if self.hf is not None else "plain"

    def with_system(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        messages = [dict(m) for m in messages]
        if self.system is not None and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The text a model continues to answer `messages` (which end before the reply)."""
        messages = self.with_system(messages)
        if self.hf is not None:
            return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"### {m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages) + "### Assistant:\n"

    def render_response(self, messages: Sequence[Message]) -> str:
        """The final assistant turn as the template writes it (end-of-turn marker included;
        plain: the bare text, the end token is appended as an id)."""
        assert messages and messages[-1]["role"] == "assistant", "the conversation must end with the reply"
        if self.hf is None:
            return messages[-1]["content"]
        prompt = self.render_prompt(messages[:-1])
        full = self.hf.apply_chat_template(self.with_system(messages), tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the tokenizer's chat template renders the prompt differently inside the full "
                             "conversation; use data.instruct.template: plain")
        return full[len(prompt):]

    def prompt_ids(self, messages: Sequence[Message]) -> np.ndarray:
        """Token ids of `render_prompt(messages)` (what generation starts from)."""
        return self.tokenizer.encode([self.render_prompt(messages)])[0].astype(np.int32)

    def encode(self, messages: Sequence[Message]) -> tuple[np.ndarray, np.ndarray]:
        """(prompt ids, response ids) of a conversation ending with the assistant's reply;
        only the response ids are ever a training target."""
        prompt = self.prompt_ids(messages[:-1])
        response = self.tokenizer.encode([self.render_response(messages)])[0].astype(np.int32)
        if self.hf is None:  # the plain layout ends a reply with the end token
            response = np.append(response, np.int32(self.tokenizer.eos_id))
        return prompt, response


def response_mask(prompt_len: int, response_len: int, seq_len: int) -> tuple[np.ndarray, int]:
    """(loss mask over `seq_len` positions, response tokens cut): True on the response
    tokens that fit after the prompt; the tail beyond `seq_len` is cut."""
    mask = np.zeros(seq_len, dtype=bool)
    kept = max(0, min(response_len, seq_len - prompt_len))
    mask[prompt_len:prompt_len + kept] = True
    return mask, response_len - kept
