"""Config of instruction data (`instructions`, `reasoning_gym`): chat rendering, generation
at evaluation time, and the procedurally generated task families."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import List, Optional


class ChatTemplate(enum.Enum):
    """How a conversation becomes the text a model reads."""

    auto = "auto"
    """The tokenizer's own chat template if it has one, else `plain`."""
    plain = "plain"
    """`### User:` / `### Assistant:` headers (for tokenizers without a template,
    e.g. the byte-level one); the response ends with the tokenizer's end token."""


@dataclasses.dataclass
class InstructConfig:
    """Instruction rows (`data.dataset: instructions` or `reasoning_gym`): rendering,
    response-only loss, and generation-based evaluation. Preference pairs
    (`preferences`) are rendered with the same `template` and `system`."""

    template: ChatTemplate = ChatTemplate.auto
    """`auto` (the tokenizer's chat template, `plain` without one) or `plain`."""
    system: Optional[str] = None
    """A system message put before every conversation that has none; null: none."""
    max_new_tokens: int = 32
    """Tokens greedily generated per held-out prompt when evaluating."""
    eval_examples: int = 64
    """Held-out prompts answered per evaluation (the first ones, per task in turn);
    0 turns generation off (eval_accuracy is then next-token accuracy)."""
    eval_batch_size: int = 16
    """Prompts decoded together (left-padded, KV cache)."""
    packing: bool = False
    """Train on packed rows: conversations one after another in rows of
    `data.seq_len`, each with position ids from 0 and attention kept inside it (a
    block-diagonal causal mask), so a batch holds fewer PAD tokens; `train.batch_size`
    then counts packed rows. The loss stays response-only; evaluation is unpacked.
    For models whose transformers implementation derives its mask from position ids
    (llama, qwen2, mistral, ...); not with `train.dp` (a row is no longer one example)."""

    def errors(self) -> list[str]:
        out = []
        if self.max_new_tokens < 1:
            out.append(f"data.instruct.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.eval_examples < 0:
            out.append(f"data.instruct.eval_examples must be >= 0, got {self.eval_examples}")
        if self.eval_batch_size < 1:
            out.append(f"data.instruct.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        return out


@dataclasses.dataclass
class ReasoningGymConfig:
    """`data.dataset: reasoning_gym`: question/answer pairs generated offline by the
    `reasoning-gym` package, scored by its verifiers."""

    tasks: List[str] = field(default_factory=lambda: ["basic_arithmetic", "spell_backward"])
    """Task families, one owner each (`data.partition: natural` gives one client
    per entry); `gcd+lcm` makes one owner holding both families."""
    examples_per_task: int = 200
    """Examples generated per family (held-out ones included)."""
    seed: int = 0
    """Generator seed, apart from the run's `seed`: runs that differ in `seed` (or
    algorithm) train and evaluate on the same questions."""

    def families(self) -> list[str]:
        """Every family named in `tasks`, in order."""
        return [name for entry in self.tasks for name in entry.split("+")]

    def errors(self) -> list[str]:
        out = []
        if not self.tasks:
            out.append("data.reasoning_gym.tasks must name at least one task family")
        if self.examples_per_task < 2:
            out.append(f"data.reasoning_gym.examples_per_task must be >= 2, got {self.examples_per_task}")
        names = self.families()
        if len(set(names)) != len(names):
            out.append(f"data.reasoning_gym.tasks names a family twice: {list(self.tasks)}")
        return out


INSTRUCTION_DATASETS = ("instructions", "reasoning_gym")


def packing_problems(cfg) -> list[str]:
    """`data.instruct.packing` against the rest of the run (`cfg`: a RunConfig)."""
    if not cfg.data.instruct.packing:
        return []
    out = []
    if cfg.data.dataset not in INSTRUCTION_DATASETS:
        out.append(f"data.instruct.packing packs conversations: it needs data.dataset in "
                   f"{list(INSTRUCTION_DATASETS)}, got {cfg.data.dataset}")
    if cfg.model.name != "hf_causal_lm":
        out.append(f"data.instruct.packing needs model.name=hf_causal_lm (position ids mark the conversations), "
                   f"got {cfg.model.name}")
    if cfg.train.dp is not None:
        out.append("data.instruct.packing cannot be combined with train.dp: a packed row holds several "
                   "conversations, so clipping per row would not bound one example's influence")
    return out
