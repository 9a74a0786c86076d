"""`ditto`: a personal model pulled to the global one (Li et al. 2021, Ditto).

The shared model trains as FedAvg's does and its update travels. Beside it each
client keeps a personal model v (every travelling tensor, its kept state): after
the shared fit it trains v on its own data with the extra objective
lambda/2 ||v - w||^2, w the global weights it received this round (the paper's
Algorithm 1). v is never sent; it is what the client evaluates as its own.
"""

from __future__ import annotations

import dataclasses

from fedray.personalization.base import PERSONALIZATIONS, Fit, Personalization

PERSONAL_SEED = 0xD177
"""Mixed into the fit's seed for the personal model's shuffling."""


def pull(lam: float, anchor: dict):
    """The regularizer lambda/2 sum ||v - w||^2 over the trainable parameters, w = `anchor`
    ({name: tensor}); batch-norm statistics are not optimised, so not pulled."""
    def regularizer(model, generator):
        terms = [((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad]
        return 0.5 * lam * sum(terms)

    return regularizer


def train_personal(lam: float, epochs: int | None):
    """`personal(model, state, anchor, fit)`: train the personal model from `state` (the
    global weights `anchor` on a client's first round), return its tensors."""
    def personal(model, state: dict | None, anchor: dict, fit: Fit) -> dict:
        import torch

        from fedray.models.flat import travelling

        tensors = travelling(model)
        with torch.no_grad():
            for name, tensor in tensors.items():
                tensor.copy_(torch.as_tensor(state[name]) if state is not None else anchor[name])
        cfg = dataclasses.replace(fit.train, persist_optimizer_state=False, dp=None,
                                  **({} if epochs is None else {"local_epochs": epochs, "local_steps": None}))
        fit.trainer(model, fit.task, fit.data, cfg, seed=fit.seed ^ PERSONAL_SEED, regularizer=pull(lam, anchor))
        return {name: t.detach().to("cpu").numpy().copy() for name, t in travelling(model).items()}

    return personal


@PERSONALIZATIONS.register("ditto")
def ditto(lam: float = 0.1, epochs: int | None = None) -> Personalization:
    """A personal model trained beside the shared one with lambda (`lam`) pulling it to the
    global weights; `epochs` local epochs (default: the run's `train` settings)."""
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")

    def problems(cfg) -> list[str]:
        if cfg.server.strategy.name == "local":
            return ["clients.personalization: ditto pulls a personal model to the global one, but "
                    "server.strategy.name: local has no global model; use one or the other"]
        return []

    return Personalization("ditto", personal=train_personal(lam, epochs), problems=problems)
