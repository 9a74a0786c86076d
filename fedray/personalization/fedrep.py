"""`fedrep`: a shared body, a personal head trained first (Collins et al. 2021, FedRep).

Each round a client first trains its personal head (the layers matching `patterns`)
for `head_epochs` with the body frozen, then the body for the run's usual local
epochs or steps with the head frozen. Only the body travels; the head is client
state, as FedPer's personal layers are.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import List

from fedray.personalization.base import PERSONALIZATIONS, Fit, Personalization, pattern_problems
from fedray.personalization.fedper import layer_names

HEAD_SEED = 0x4EAD
"""Mixed into the fit's seed for the head phase's shuffling."""


@contextlib.contextmanager
def frozen(model, names: frozenset[str]):
    """Parameters named in `names` stop training for the block (their optimizer leaves
    them out), and train again after it."""
    params = [p for n, p in model.named_parameters() if n in names and p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def train_head_then_body(head_epochs: int):
    """FedRep's local training: head alone, then body alone."""
    def train(model, local: frozenset[str], fit: Fit):
        body = frozenset(n for n, p in model.named_parameters() if p.requires_grad) - local
        head_cfg = dataclasses.replace(fit.train, local_epochs=head_epochs, local_steps=None,
                                       persist_optimizer_state=False)
        with frozen(model, body):
            fit.trainer(model, fit.task, fit.data, head_cfg, seed=fit.seed ^ HEAD_SEED)
        with frozen(model, local):
            return fit.trainer(model, fit.task, fit.data, fit.train, seed=fit.seed,
                               optimizer_state=fit.optimizer_state, regularizer=fit.regularizer)

    return train


@PERSONALIZATIONS.register("fedrep")
def fedrep(patterns: List[str], head_epochs: int = 1) -> Personalization:
    """Personal head (`patterns`, as FedPer's) trained `head_epochs` epochs before the
    shared body's local training."""
    if head_epochs < 1:
        raise ValueError(f"head_epochs must be >= 1, got {head_epochs}")
    patterns = list(patterns)

    def problems(cfg) -> list[str]:
        if cfg.train.dp is not None:
            return ["clients.personalization: fedrep trains its head outside DP-SGD's accounting; "
                    "drop train.dp or use fedper"]
        return []

    return Personalization(
        "fedrep", local=layer_names(patterns), train=train_head_then_body(head_epochs), problems=problems,
        layer_problems=lambda names: pattern_problems("clients.personalization.args.patterns", patterns,
                                                      names, "fedrep"))
