"""Personalisation: the part of a model that is each client's own (`clients.personalization`).

One module per method (`finetune`, `fedper`, `fedrep`, `ditto`, `fedbn`), each one
factory and one entry of `PERSONALIZATIONS`; `fedray.personalization.base` says
what a method is. `server.strategy.name: local` keeps every tensor on its client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedray.personalization import adapter, ditto, fedbn, fedper, fedrep, finetune  # noqa: F401 - registers them
from fedray.personalization.base import PERSONALIZATIONS, Fit, Personalization

if TYPE_CHECKING:
    from fedray.config.schema import RunConfig
    from fedray.types import ParamSpec

__all__ = ["PERSONALIZATIONS", "Fit", "Personalization", "build_personalization", "local_names",
           "personalize", "shared_spec", "trains_alone"]


def trains_alone(cfg: "RunConfig") -> bool:
    """`server.strategy.name: local`: no federation, every client trains its own model."""
    return cfg.server.strategy.name == "local"


def build_personalization(cfg: "RunConfig") -> Personalization | None:
    """The run's method (None: none, and not `local`); ValueError naming the key."""
    component = cfg.clients.personalization
    if component is not None:
        return PERSONALIZATIONS.build_component("clients.personalization", component)
    if trains_alone(cfg):
        return Personalization("local", local=_everything)
    return None


def personalize(cfg: "RunConfig", model) -> None:
    """Add the method's own modules to a freshly built model (the personal LoRA adapter);
    every process that builds the run's model calls it, right after `build_model`."""
    method = build_personalization(cfg)
    if method is not None and method.extend is not None:
        method.extend(model, cfg)


def local_names(cfg: "RunConfig", model) -> frozenset[str]:
    """The model's travelling tensors that stay on the clients in this run."""
    method = build_personalization(cfg)
    if trains_alone(cfg):
        return _everything(model)
    return frozenset() if method is None or method.local is None else method.local(model)


def shared_spec(cfg: "RunConfig", model) -> "ParamSpec":
    """The layout of what travels: the model's travelling tensors less the local ones."""
    from fedray.models.flat import param_spec

    return param_spec(model, exclude=local_names(cfg, model))


def _everything(model) -> frozenset[str]:
    from fedray.models.flat import travelling

    return frozenset(travelling(model))
