"""A backdoor (trigger) poisoning attack's pieces: stamping the trigger, poisoning a shard,
and measuring how often a model obeys the trigger.

The attacker sets a few input features (`clients.attack.trigger`, by default the
last four: the bottom-right pixels of an image) to `trigger_value` on a share
(`fraction`) of its examples and relabels them `target`. A model that learned the
backdoor classifies triggered inputs as `target` while clean accuracy stays high;
attack success is the share of triggered held-out inputs, whose true label is not
the target, that it classifies as the target. Unlearning the attacker should bring
it back to the level of a model that never saw the attacker.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

from fedray.config.schema import AttackConfig, RunConfig
from fedray.data.datasets import DataInfo
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec, set_flat
from fedray.models.tasks import TASKS

_DEFAULT_TRIGGER = 4
_BATCH = 1024


def trigger_features(cfg: AttackConfig, num_features: int) -> np.ndarray:
    """Indices of the (flattened) features the trigger sets; ValueError if out of range."""
    idx = np.asarray(cfg.trigger if cfg.trigger else range(num_features - _DEFAULT_TRIGGER, num_features),
                     dtype=np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= num_features:
        raise ValueError(f"clients.attack.trigger {idx.tolist()} must index the {num_features} input features")
    return idx


def stamp(x: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """A copy of inputs `x` (one row per example) with the trigger set."""
    flat = x.reshape(len(x), -1).clone()
    flat[:, torch.as_tensor(trigger_features(cfg, flat.shape[1]), device=x.device)] = cfg.trigger_value
    return flat.reshape(x.shape)


def poison(x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shard with `fraction` of its examples triggered and labelled `target`. Which
    examples is fixed by the shard's size alone, so every round poisons the same ones."""
    if num_classes < 2 or not 0 <= cfg.target < num_classes:
        raise ValueError(f"clients.attack.name=backdoor needs a classification dataset with label "
                         f"clients.attack.target={cfg.target} among its {num_classes} classes")
    n = len(y)
    chosen = np.random.default_rng([n, 0xBAC6D0]).permutation(n)[: math.ceil(cfg.fraction * n)]
    rows = torch.as_tensor(chosen, device=y.device)
    x, y = x.clone(), y.clone()
    x[rows] = stamp(x[rows], cfg)
    y[rows] = cfg.target
    return x, y


@torch.no_grad()
def attack_success(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig) -> float:
    """Share of held-out inputs not of the target class that the model classifies as the
    target once the trigger is stamped on them."""
    keep = y != cfg.target
    triggered = stamp(x[keep], cfg)
    model.eval()
    hits = 0
    for start in range(0, len(triggered), _BATCH):
        hits += int((model(triggered[start : start + _BATCH]).argmax(dim=1) == cfg.target).sum())
    return hits / max(1, len(triggered))


class Probe:
    """Held-out metrics of flat parameter vectors of a run's model: loss, accuracy, and
    (when the run's attack is `backdoor`) `backdoor_success`. For comparing a model
    before and after unlearning outside the server."""

    def __init__(self, cfg: RunConfig, info: DataInfo, test: pa.Table):
        self.cfg = cfg
        self.model = build_model(cfg.model, info, cfg.seed)
        self.spec = param_spec(self.model)
        self.task = TASKS.build(info.task)
        self.data = self.task.prepare(test, torch.device("cpu"))
        self.initial = get_flat(self.model, self.spec)
        """The model's parameters before any round (the run's seeded initialisation)."""

    def metrics(self, params: np.ndarray) -> dict[str, float]:
        set_flat(self.model, self.spec, params)
        self.model.eval()
        out = self.task.evaluate(self.model, self.data, _BATCH)
        attack = self.cfg.clients.attack
        if attack.name == "backdoor":
            out["backdoor_success"] = attack_success(self.model, *self.data, attack)
        return out
