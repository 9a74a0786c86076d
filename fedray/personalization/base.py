"""The personalisation interface: what stays on a client, how it trains, what it evaluates.

A personalisation method (`clients.personalization: {name, args}`) is one factory
returning a `Personalization`, built by the one registry (`PERSONALIZATIONS`). It
says four things, each optional:

- `local(model)`: which of the model's travelling tensors never leave the client
  (FedPer's and FedRep's personal layers, FedBN's norm layers, every tensor under
  `server.strategy.name: local`). The exchange leaves them out: the broadcast, the
  update and the server's model hold the shared part only, and the server's model
  keeps its own untouched copy of the rest;
- `train`: replaces the local training of the model (FedRep: head, then body);
- `personal`: a personal model trained beside the shared one after each fit, from
  the personal state (Ditto: pulled to the global weights by lambda);
- `before_evaluation`: turns the global model into the client's own just before it
  is evaluated (finetune: k local steps).

The personal state (`KeptState.personal`, {tensor name: array}) is client state:
kept in the client store and committed with the two-phase commit, never in a
payload, a byte count or a server checkpoint.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from fedray.config.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class Personalization:
    """One method's pieces (module docstring); None where it has none."""

    name: str
    local: Callable[["torch.nn.Module"], frozenset[str]] | None = None
    """Names of the model's travelling tensors that stay on the client."""
    train: Callable[..., Any] | None = None
    """`train(model, local_names, fit)` replacing `train_local(model, **fit)`."""
    personal: Callable[..., dict] | None = None
    """`personal(model, state, global_params, fit) -> state`: train the personal model
    (a {name: array} of every travelling tensor) after the shared fit."""
    before_evaluation: Callable[..., None] | None = None
    """`before_evaluation(model, fit)`: adapt a copy of the global model in place."""
    extend: Callable[[Any, Any], None] | None = None
    """`extend(model, cfg)`: add the personal part's own modules to a freshly built model,
    the same on every process that builds it (the personal LoRA adapter)."""
    on_lora: bool = False
    """Whether the method works on a LoRA run (`model.peft`); the others personalise
    the whole model."""
    problems: Callable[[Any], list[str]] = lambda cfg: []
    """Config problems of this method in a run (`RunConfig` -> messages naming keys)."""
    layer_problems: Callable[[Sequence[str]], list[str]] = lambda names: []
    """Problems found against the model's travelling tensor names (e.g. a pattern that
    matches none)."""


class Fit(NamedTuple):
    """What a client's local training is given (`fedray.client.train.train_local`'s
    arguments): a method's training and its personal model train on the same."""

    task: Any
    data: Any
    train: Any
    """The run's `TrainConfig`."""
    seed: int
    optimizer_state: Any = None
    regularizer: Any = None
    trainer: Any = None
    """The local training loop (`fedray.client.train.train_local`), given by the client
    layer above this package."""


PERSONALIZATIONS: Registry[Callable[..., Personalization]] = Registry("personalization", returns=Personalization)


def matching(names: Sequence[str], patterns: Sequence[str]) -> frozenset[str]:
    """The names matching any of the shell-style `patterns` (`fnmatch`: `2.*`, `*.bias`),
    or whose dotted prefix does (`2` matches `2.weight` and `2.bias`)."""
    def hit(name: str) -> bool:
        prefixes = [name] + [name[:i] for i, c in enumerate(name) if c == "."]
        return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes for pattern in patterns)

    return frozenset(n for n in names if hit(n))


def pattern_problems(key: str, patterns: Sequence[str], names: Sequence[str], method: str) -> list[str]:
    """Patterns that match none of the model's travelling tensors (a typo would keep
    nothing personal and silently run FedAvg), or that match all of them."""
    out = [f"{key}: pattern {p!r} matches no parameter of the model (its tensors: {_sample(names)})"
           for p in patterns if not matching(names, [p])]
    if not out and matching(names, patterns) == frozenset(names):
        out.append(f"{key}: patterns {list(patterns)} match every parameter of the model, so nothing would be "
                   f"shared; use server.strategy.name: local for clients that train alone")
    if not patterns:
        out.append(f"{key}: {method} needs at least one pattern naming its personal layers")
    return out


def _sample(names: Sequence[str]) -> str:
    shown = list(names[:8])
    return ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
