"""`fedbn`: normalisation layers stay on the client (Li et al. 2021, FedBN).

The weights, biases and running statistics of every normalisation layer (batch,
layer, group and instance norm) are client state; the rest is shared as FedAvg's.
The names are found from the model's modules, so no pattern is needed.
"""

from __future__ import annotations

from fedray.personalization.base import PERSONALIZATIONS, Personalization


def norm_names(model) -> frozenset[str]:
    """The travelling tensors that belong to a normalisation module."""
    import torch

    from fedray.models.flat import travelling

    kinds = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    kinds += (torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()
    prefixes = [f"{n}." if n else "" for n, m in model.named_modules() if isinstance(m, kinds)]
    names = travelling(model)
    return frozenset(n for n in names for p in prefixes if n.startswith(p) and "." not in n[len(p):])


@PERSONALIZATIONS.register("fedbn")
def fedbn() -> Personalization:
    """Keep every normalisation layer's parameters and statistics personal."""
    return Personalization("fedbn", local=norm_names)
