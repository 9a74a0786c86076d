"""A client actor's side of personalisation: load, train and keep each client's own part.

An actor hosting many clients (`clients.placement: pool`) has one model: before a
client trains, its personal tensors (from its kept state, or the initial ones every
client and the server start from) are loaded into it; after, they are read back
into the new kept state, which the two-phase commit makes current only if the
round aggregated the client's update.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from fedray.models.flat import travelling
from fedray.personalization.base import Fit, Personalization


class PersonalParts:
    """The run's method, the model's local tensor names and their initial values."""

    def __init__(self, method: Personalization | None, local: frozenset[str], model: torch.nn.Module):
        self.method, self.local = method, local
        tensors = travelling(model)
        self.initial = {n: tensors[n].detach().to("cpu").clone() for n in sorted(local)}
        """The built model's values (seeded: the same on every client and the server)."""

    @property
    def active(self) -> bool:
        return self.method is not None

    def load(self, model: torch.nn.Module, state: dict | None) -> None:
        """Put a client's local tensors (its kept ones, else the initial ones) into `model`."""
        tensors = travelling(model)
        with torch.no_grad():
            for name in self.local:
                value = self.initial[name] if state is None else torch.as_tensor(state[name])
                tensors[name].copy_(value)

    def train(self, model: torch.nn.Module, fit: Fit) -> Any:
        """The client's local training: the method's own, else `fit.trainer`'s."""
        if self.method is not None and self.method.train is not None:
            return self.method.train(model, self.local, fit)
        return fit.trainer(model, fit.task, fit.data, fit.train, seed=fit.seed, optimizer_state=fit.optimizer_state,
                       regularizer=fit.regularizer)

    def keep(self, model: torch.nn.Module, state: dict | None, anchor: Callable[[], dict],
             fit: Fit) -> dict | None:
        """The client's new personal state, after its shared fit: its local tensors, or
        (Ditto) its personal model trained from `state` towards the global weights
        (`anchor()`, {name: tensor})."""
        if self.method is None:
            return None
        if self.method.personal is not None:
            return self.method.personal(model, state, anchor(), fit)
        if not self.local:
            return None
        tensors = travelling(model)
        return {n: tensors[n].detach().to("cpu").numpy().copy() for n in sorted(self.local)}

    def personal_model(self, global_model: torch.nn.Module, state: dict | None,
                       fit: Callable[[], Fit]) -> torch.nn.Module | None:
        """A copy of `global_model` made the client's own: its personal tensors loaded (the
        initial ones before it first trained), then the method's pre-evaluation step.
        None without a method."""
        if self.method is None:
            return None
        model = copy.deepcopy(global_model)
        tensors = travelling(model)
        with torch.no_grad():
            for name in (self.local if state is None else state):
                value = self.initial[name] if state is None else torch.as_tensor(np.asarray(state[name]))
                tensors[name].copy_(value.to(tensors[name].device))
        if self.method.before_evaluation is not None:
            self.method.before_evaluation(model, fit())
        model.eval()
        return model
