"""Move a module's trainable parameters in and out of one flat float32 vector."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fedray.types import ParamSpec


def param_spec(model: torch.nn.Module) -> ParamSpec:
    """The travelling parameters: those that require grad (all of an MLP, only the
    adapters of a PEFT model), in `named_parameters` order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return ParamSpec(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))


def get_flat(model: torch.nn.Module, spec: ParamSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Copy the travelling parameters into `out` (allocated if None)."""
    if out is None:
        out = np.empty(spec.num_params, dtype=np.float32)
    params = dict(model.named_parameters())
    views = spec.unflatten(out)
    with torch.no_grad():
        for name in spec.names:
            torch.from_numpy(views[name]).copy_(params[name].detach().to("cpu", torch.float32))
    return out


def get_delta(
    model: torch.nn.Module, spec: ParamSpec, base: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """`out = params - base` in one pass over memory (no separate copy, then subtract)."""
    params = dict(model.named_parameters())
    out_views, base_views = spec.unflatten(out), spec.unflatten(base)
    with torch.no_grad():
        for name in spec.names:
            torch.sub(
                params[name].detach().to("cpu", torch.float32),
                as_tensor(base_views[name]),
                out=torch.from_numpy(out_views[name]),
            )
    return out


def set_flat(model: torch.nn.Module, spec: ParamSpec, flat: np.ndarray) -> None:
    """Load the travelling parameters from `flat` (which may be a read-only view)."""
    params = dict(model.named_parameters())
    views = spec.unflatten(flat)
    with torch.no_grad():
        for name in spec.names:
            params[name].copy_(as_tensor(views[name]))


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with `array`, which may be a read-only object-store view.

    torch warns about read-only arrays because writes would be undefined; every
    caller here only reads the result.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
