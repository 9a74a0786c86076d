"""Move a module's travelling tensors (trainable parameters, batch-norm statistics) in
and out of one flat float32 vector."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fedray.types import ParamSpec


def travelling(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a client sends and the server averages, by name: the parameters that
    require grad (all of an MLP, only the adapters of a PEFT model) in
    `named_parameters` order, then the running mean and variance of every batch norm
    that tracks them, unless its own parameters are frozen (a PEFT base model).

    A batch norm's statistics are buffers, trained by the forward pass instead of
    the optimizer; left behind, the server's model would evaluate with its initial
    ones (mean 0, variance 1) and every client would restart from its own. Averaged
    like weights (FedAvg as GrBFL's authors run it), they are a weighted mean of the
    clients' moving averages. `num_batches_tracked` stays local: it is an integer
    count, and read only by a batch norm built with momentum=None. Keeping batch
    norm local altogether (FedBN) is a filter on these names."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for module_name, module in model.named_modules():
        frozen = module_is_frozen(module)  # a frozen base's norms (PEFT) stay as they are: adapters travel
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.track_running_stats and not frozen:
            prefix = f"{module_name}." if module_name else ""
            named[f"{prefix}running_mean"] = module.running_mean
            named[f"{prefix}running_var"] = module.running_var
    return named


def module_is_frozen(module: torch.nn.Module) -> bool:
    """True when the module has parameters and none of them trains."""
    own = list(module.parameters(recurse=False))
    return bool(own) and not any(p.requires_grad for p in own)


def param_spec(model: torch.nn.Module, exclude: frozenset[str] = frozenset()) -> ParamSpec:
    """The layout of `travelling(model)` in the flat vector, less the tensors named in
    `exclude` (a client's personal ones, `fedray.personalization`): those never travel."""
    named = {n: t for n, t in travelling(model).items() if n not in exclude}
    return ParamSpec(tuple(named), tuple(tuple(t.shape) for t in named.values()))


def get_flat(model: torch.nn.Module, spec: ParamSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Copy the travelling parameters into `out` (allocated if None)."""
    if out is None:
        out = np.empty(spec.num_params, dtype=np.float32)
    params = travelling(model)
    views = spec.unflatten(out)
    with torch.no_grad():
        for name in spec.names:
            torch.from_numpy(views[name]).copy_(params[name].detach().to("cpu", torch.float32))
    return out


def get_delta(
    model: torch.nn.Module, spec: ParamSpec, base: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """`out = params - base` in one pass over memory (no separate copy, then subtract)."""
    params = travelling(model)
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
    """Load the travelling tensors from `flat` (which may be a read-only view). A running
    variance is floored at 0: an update transform (DP noise, quantisation, server Adam)
    can push the average below it, and batch norm would divide by sqrt(var + eps) < 0."""
    params = travelling(model)
    views = spec.unflatten(flat)
    with torch.no_grad():
        for name in spec.names:
            params[name].copy_(as_tensor(views[name]))
            if name.endswith("running_var"):
                params[name].clamp_(min=0.0)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with `array`, which may be a read-only object-store view.

    torch warns about read-only arrays because writes would be undefined; every
    caller here only reads the result.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
