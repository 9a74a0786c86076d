"""Checking a model for an owner's watermark, and what a model may go through after it leaves the federation.

`verify` rebuilds the scheme from the key alone (its name and arguments are in
the key file) and reports the scheme's evidence with a verdict: the watermark is
`detected` when the p-value, the chance that a model trained without this key
scores at least as well, is below `alpha`. The attacks (`prune_by_magnitude`,
`quantize_int8`, `fine_tune`) are what a thief might do to a stolen model; a
watermark worth having survives them.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from fedray.config.trust import AllowCode, is_dotted
from fedray.lifecycle.watermark.scheme import SCHEMES, Scheme


def verify(model, key: dict, alpha: float = 1e-3, allow_code: Sequence[str] = ()) -> dict[str, Any]:
    """The evidence that `model` carries `key`'s watermark, and `detected`."""
    scheme = key_scheme(key, allow_code)
    model.eval()
    evidence = scheme.verify(model, key)
    return {"scheme": key["scheme"], "owner": key["owner"], **evidence, "alpha": alpha,
            "detected": bool(evidence["p_value"] < alpha)}


def key_scheme(key: dict, allow_code: Sequence[str] = ()) -> Scheme:
    """The scheme a key names, built from its arguments. A key file is data someone may
    have handed over: its scheme must be a registered name, or a dotted path the user
    vouches for with `allow_code` (`--allow-code`); its arguments are checked against the
    scheme's signature before it is built. ValueError otherwise, and nothing is called."""
    name = key["scheme"]
    if name not in SCHEMES.names() and not AllowCode(allow_code).covers(name):
        hint = f"; if you trust that code, pass --allow-code {name.partition(':')[0]}" if is_dotted(name) else ""
        raise ValueError(f"the key names watermark scheme {name!r}, which is not one of fedray's "
                         f"{SCHEMES.names()}; a key file holds data, never code{hint}")
    return SCHEMES.build(name, **key["args"])


def prune_by_magnitude(params: Iterable, fraction: float) -> None:
    """Zero the `fraction` of smallest-magnitude entries of every tensor (e.g. a model's
    `parameters()`, or only its adapters), in place."""
    import torch

    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    with torch.no_grad():
        for p in params:
            count = int(fraction * p.numel())
            if count:
                threshold = p.detach().abs().reshape(-1).float().kthvalue(count).values
                p.masked_fill_(p.abs() <= threshold, 0.0)


def quantize_int8(params: Iterable) -> None:
    """Round every tensor to 8-bit integers and back (symmetric, per tensor), in place."""
    import torch

    with torch.no_grad():
        for p in params:
            scale = p.detach().abs().max().float() / 127
            if scale > 0:
                p.copy_((torch.round(p.float() / scale).clamp(-127, 127) * scale).to(p.dtype))


def fine_tune(model, task: Any, data: Any, epochs: int, lr: float, batch_size: int = 32, seed: int = 0) -> None:
    """Plain SGD on `data` (prepared by `task`) for `epochs` passes, in place, without
    any watermark term: what a thief who retrains a stolen model does."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in task.batches(data, batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            task.loss(model, batch).backward()
            optimizer.step()
    model.eval()
