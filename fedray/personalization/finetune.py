"""`finetune`: k local steps on the client's own data before the global model is evaluated.

The baseline every personalisation paper reports (e.g. FedAvg+FT in Collins et al.
2021, "Exploiting shared representations"): nothing is kept between rounds, nothing
changes in training; the client's personal model is the global one after `steps`
optimizer steps on its training rows, made fresh at each evaluation.
"""

from __future__ import annotations

import dataclasses

from fedray.personalization.base import PERSONALIZATIONS, Fit, Personalization


@PERSONALIZATIONS.register("finetune")
def finetune(steps: int = 5, lr: float | None = None) -> Personalization:
    """Fine-tune a copy of the global model for `steps` optimizer steps (at `lr`, default
    `train.lr`) on the client's training data before evaluating it."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")

    def before_evaluation(model, fit: Fit) -> None:
        cfg = dataclasses.replace(fit.train, local_steps=steps, lr=lr or fit.train.lr, dp=None,
                                  persist_optimizer_state=False)
        fit.trainer(model, fit.task, fit.data, cfg, seed=fit.seed)

    return Personalization("finetune", before_evaluation=before_evaluation)
