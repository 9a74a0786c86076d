"""Quantised frozen bases through bitsandbytes: load, check the backend, dequantise.

transformers' bitsandbytes integration replaces every linear layer but the output
head with a 4-bit (`Linear4bit`) or 8-bit (`Linear8bitLt`) one as the checkpoint
loads; PEFT then wraps the targeted ones with float32 LoRA adapters. Whether the
installed bitsandbytes runs on a device is found out by running one quantised
layer there (`backend_problem`), before Ray starts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fedray.config.finetune import QuantizationConfig

if TYPE_CHECKING:
    import torch


def bnb_config(q: QuantizationConfig):
    """transformers' `BitsAndBytesConfig` for `model.quantization`."""
    import torch
    from transformers import BitsAndBytesConfig

    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.type.value,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype.value),
        bnb_4bit_use_double_quant=q.double_quant,
    )


def load_quantized(folder: Path, q: QuantizationConfig, dtype: "torch.dtype",
                   device: "torch.device") -> "torch.nn.Module":
    """The checkpoint at `folder` with its linear layers quantised on `device`; the
    other tensors (embeddings, norms, output head) in `dtype`."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=dtype, quantization_config=bnb_config(q),
        device_map={"": str(device)})
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            # On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight at its
            # first eval-mode, no-grad forward into a layout whose kernel passes no gradient
            # to its input, and keeps it: a later training pass would silently give the
            # adapters no gradients. Keep the trainable layout.
            module.support_avx512bf16_for_cpu = False
    return model


def quantize(model: "torch.nn.Module", q: QuantizationConfig, device: "torch.device") -> "torch.nn.Module":
    """A float model (built from `model.config`) quantised: bitsandbytes quantises while
    loading, so the weights go through a temporary checkpoint folder."""
    folder = Path(tempfile.mkdtemp(prefix="fedray-quantize-"))
    try:
        model.save_pretrained(folder)
        return load_quantized(folder, q, model.dtype, device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_quantized(module: "torch.nn.Module") -> bool:
    """Whether `module` is a bitsandbytes 4- or 8-bit linear layer."""
    import bitsandbytes as bnb

    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def dequantized_weights(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """Float32 weights of every quantised linear layer, by module name (PEFT's wrapper
    names stripped): the weights the adapters were trained against.

    Call it before the model's first forward pass: on CPU, bitsandbytes repacks a
    4-bit weight at its first use into a layout this does not read.
    """
    from peft.utils.integrations import dequantize_bnb_weight

    out = {}
    for name, module in model.named_modules():
        if not is_quantized(module):
            continue
        state = getattr(module.weight, "quant_state", None) or getattr(module, "state", None)
        assert not getattr(state, "packing_format_for_cpu", False), f"{name} was repacked by a forward pass"
        clean = name.removeprefix("base_model.model.").replace(".base_layer", "")
        out[clean] = dequantize_bnb_weight(module.weight, state).float().cpu()
    return out


def backend_problem(q: QuantizationConfig, device: str, why: str) -> str | None:
    """Why `model.quantization` cannot run on `device` (`cpu` or `cuda`), found by running
    one quantised layer there, or None. `why` says which setting put the work there."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError:
        return "model.quantization needs the bitsandbytes package (pip install 'bitsandbytes>=0.50')"
    if device == "cuda" and not torch.cuda.is_available():
        return None  # the driver has no GPU to try; the actor names the problem if there is one
    try:
        probe_layer(bnb, q, torch.device(device))
    except Exception as err:  # an unsupported backend fails in many ways; all mean "cannot run here"
        return (f"model.quantization (bits={q.bits}): bitsandbytes {bnb.__version__} cannot run "
                f"quantised layers on {device} ({why}): {type(err).__name__}: {err}")
    return None


def probe_layer(bnb, q: QuantizationConfig, device: "torch.device") -> None:
    """A 64x64 layer quantised as configured, one forward and backward pass on `device`."""
    import torch

    if q.bits == 8:
        layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=getattr(torch, q.compute_dtype.value),
                                  quant_type=q.type.value, compress_statistics=q.double_quant)
    layer = layer.to(device)
    x = torch.randn(2, 64, device=device, requires_grad=True)
    layer(x).float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "no finite gradient through the layer"


def quantization_problems(cfg) -> list[str]:
    """Backend problems on every device the run's quantised models go to (the clients'
    and the server's, as their `resources.num_gpus` place them)."""
    q = cfg.model.quantization
    if q is None:
        return []
    places = {}
    for actor in range(cfg.clients.num_actors):
        gpus = cfg.clients.actor_resources(actor).num_gpus
        places.setdefault("cuda" if gpus > 0 else "cpu", f"clients.resources.num_gpus={gpus}")
    gpus = cfg.server.resources.num_gpus
    places.setdefault("cuda" if gpus > 0 else "cpu", f"server.resources.num_gpus={gpus}")
    return [p for device, why in sorted(places.items()) if (p := backend_problem(q, device, why))]
