"""The public set of knowledge transfer, as each task's models see it.

Knowledge transfer compares two models' logits on the same public inputs. What
an input is, how a model is run on it and which output positions count differ
by task: a classifier maps feature rows to one logit vector each; a causal LM
maps token rows to a next-token distribution per position, of which only the
real tokens count (padding, id < 0, never does). `PUBLIC_TASKS` holds one view
per task, used alike by clients (KD term, their logits), the ZeRO ranks
(teacher logits, distillation and warm-up steps) and the launcher's checks.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from fedray.config.registry import Registry
from fedray.data.arrow import to_numpy, token_arrays

if TYPE_CHECKING:
    import torch

    from fedray.config.schema import RunConfig


class StoredFile(Protocol):
    """A file of the run directory, local or in an object store (the server hands the
    distiller a `fedray.server.storage.Location`; this package sits below `server`)."""

    def exists(self) -> bool: ...

    def read_bytes(self) -> bytes: ...

    def write(self, write: Callable[[BinaryIO], None]) -> None:
        """Write the whole file atomically through `write(file object)`."""


class StoredDir(Protocol):
    """A folder of the run directory: where generated public sets are cached."""

    def __truediv__(self, name: str) -> StoredFile: ...


class PublicTask(Protocol):
    """How one task's models read the public set."""

    def arrays(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
        """(inputs, labels or None) of a public table."""

    def tensor(self, inputs: np.ndarray, device: Any) -> "torch.Tensor":
        """Public inputs as the model takes them, on `device`."""

    def positions(self, inputs: np.ndarray) -> int:
        """Logit vectors the model produces per input row."""

    def forward(self, model: Any, inputs: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """(logits [..., vocabulary], mask of the positions that count or None for all)."""

    def supervised_loss(self, model: Any, batch: dict) -> "torch.Tensor":
        """The task's own loss on labelled public rows (the foundation model's warm-up)."""


PUBLIC_TASKS: Registry = Registry("public-set task")
"""`DataInfo.task` -> its `PublicTask` class."""


def _logits(out: Any) -> "torch.Tensor":
    return getattr(out, "logits", out)


@PUBLIC_TASKS.register("classification")
class FeatureRows:
    """Feature vectors; one logit vector (class scores) per row."""

    def arrays(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
        x, y = to_numpy(table)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def tensor(self, inputs: np.ndarray, device: Any) -> "torch.Tensor":
        import torch

        return torch.as_tensor(np.asarray(inputs, dtype=np.float32), device=device)

    def positions(self, inputs: np.ndarray) -> int:
        return 1

    def forward(self, model: Any, inputs: "torch.Tensor"):
        dtype = next(model.parameters()).dtype  # a bfloat16 model takes bfloat16 features
        return _logits(model(inputs.to(dtype))), None

    def supervised_loss(self, model: Any, batch: dict) -> "torch.Tensor":
        import torch.nn.functional as F

        logits = _logits(model(batch["inputs"]))
        return F.cross_entropy(logits.float(), batch["labels"].reshape(-1))


@PUBLIC_TASKS.register("causal_lm")
class TokenRows:
    """Rows of token ids; a next-token distribution at every real (non-padding) position."""

    def arrays(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
        ids, _ = token_arrays(table)
        return np.ascontiguousarray(ids, dtype=np.int32), None

    def tensor(self, inputs: np.ndarray, device: Any) -> "torch.Tensor":
        import torch

        return torch.as_tensor(np.asarray(inputs, dtype=np.int64), device=device)

    def positions(self, inputs: np.ndarray) -> int:
        return int(inputs.shape[1])

    def forward(self, model: Any, inputs: "torch.Tensor"):
        mask = inputs >= 0
        out = model(input_ids=inputs.clamp_min(0).long(), attention_mask=mask.long(), use_cache=False)
        return _logits(out), mask

    def supervised_loss(self, model: Any, batch: dict) -> "torch.Tensor":
        ids = batch["inputs"].long()
        mask = ids >= 0
        return model(input_ids=ids.clamp_min(0), attention_mask=mask.long(),
                     labels=ids.masked_fill(~mask, -100), use_cache=False).loss


def public_task(task: str) -> PublicTask:
    """The view of `task` (a `DataInfo.task` name); an unknown task says which exist."""
    return PUBLIC_TASKS.build(task)


# ---- synthetic text: prompts and the run directory's cache ------------------------
def prompt_prefixes(cfg: "RunConfig") -> list[np.ndarray]:
    """Token ids each generated sequence starts with: the end-of-document token (the
    separator of packed training rows), then a prompt; one per prompt, or the token alone."""
    from fedray.data.tokenize import TOKENIZERS

    tokenizer = TOKENIZERS.build(cfg.data.tokenizer, cfg.model)
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    prompts = cfg.server.distill.public.prompts
    if not prompts:
        return [eos]
    return [np.concatenate([eos, ids.astype(np.int64)]) for ids in tokenizer.encode(list(prompts))]


def public_seq_len(cfg: "RunConfig") -> int:
    """Tokens per generated sequence: `server.distill.public.seq_len`, else `data.seq_len`."""
    return cfg.server.distill.public.seq_len or cfg.data.seq_len


def cached_set(where: StoredFile) -> np.ndarray | None:
    """A generated public set saved in the run directory, or None if there is none."""
    if not where.exists():
        return None
    return np.load(io.BytesIO(where.read_bytes()), allow_pickle=False)


def cache_set(where: StoredFile, ids: np.ndarray) -> None:
    """Save a generated set whole (atomically), so a resumed run reuses it exactly."""
    where.write(lambda fh: np.save(fh, np.ascontiguousarray(ids), allow_pickle=False))


def assign_prefixes(prefixes: Sequence[np.ndarray], num_sequences: int) -> list[np.ndarray]:
    """Sequence i starts with prefix i mod len(prefixes)."""
    return [prefixes[i % len(prefixes)] for i in range(num_sequences)]
