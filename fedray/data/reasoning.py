"""`reasoning_gym`: question/answer pairs generated offline by the `reasoning-gym` package,
one owner per task family (or group of families), scored by the package's verifiers.

Generation is procedural and seeded (`data.reasoning_gym.seed`, offset per family),
so the same config always gives the same questions; nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import zlib
from typing import Callable

from fedray.config.schema import DataConfig
from fedray.data.instructions import ChatExample, Conversations


def _package():
    try:
        import reasoning_gym
    except ImportError:
        raise ValueError("data.dataset=reasoning_gym needs the reasoning-gym package "
                         "(pip install 'reasoning-gym>=0.1.25,<0.2')") from None
    return reasoning_gym


def known_families() -> list[str]:
    """Every task family the installed reasoning-gym generates."""
    from reasoning_gym.factory import DATASETS as FAMILIES

    _package()
    return sorted(FAMILIES)


def family_examples(family: str, size: int, seed: int) -> list[dict]:
    """`size` entries (question, answer, metadata) of one family; the seed is offset by
    the family's name so that families sharing `seed` do not share random streams."""
    rg = _package()
    if family not in known_families():
        raise ValueError(f"data.reasoning_gym.tasks: unknown task family {family!r}; "
                         f"reasoning-gym has {known_families()}")
    dataset = rg.create_dataset(family, seed=seed + zlib.crc32(family.encode()) % 100_003, size=size)
    return [dataset[i] for i in range(size)]


def reasoning_gym(cfg: DataConfig) -> Conversations:
    """One owner per entry of `data.reasoning_gym.tasks` (`a+b`: one owner, both families).
    Registered lazily as `reasoning_gym` (fedray.data), so configs check without the package."""
    spec = cfg.reasoning_gym
    owners, examples = [], []
    for entry in spec.tasks:
        rows = [example_of(e) for family in entry.split("+")
                for e in family_examples(family, spec.examples_per_task, spec.seed)]
        owners.append(entry)
        examples.append(tuple(rows))
    return Conversations(tuple(owners), tuple(examples))


def example_of(entry: dict) -> ChatExample:
    """A conversation (the question, the answer) carrying its entry for the verifier."""
    messages = ({"role": "user", "content": entry["question"]}, {"role": "assistant", "content": entry["answer"]})
    return ChatExample(messages, entry["answer"], json.dumps(entry, default=str))


@functools.lru_cache(maxsize=None)
def _scorer(family: str) -> Callable[[str, dict], float]:
    return _package().get_score_answer_fn(family)


def verify(answer: str, entry: str) -> float:
    """The family's verifier score of `answer` in [0, 1] (1.0 correct; some families give
    partial credit, and some round a little above 1)."""
    record = json.loads(entry)
    return min(1.0, max(0.0, float(_scorer(record["metadata"]["source_dataset"])(answer, record))))
