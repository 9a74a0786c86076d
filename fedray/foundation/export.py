"""Consolidate the foundation model's ZeRO shards into one fp32 state dict."""

from __future__ import annotations

import os
from pathlib import Path


def export_foundation(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write `<out>/foundation_model.safetensors` (a plain `state_dict`, loadable without
    DeepSpeed, and without running code: not a pickle) from the newest DeepSpeed
    checkpoint of the run."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file

    shards = Path(run_dir) / "checkpoints" / "foundation"
    latest = shards / "latest"
    if not latest.is_file():
        raise FileNotFoundError(f"{shards}: no foundation-model checkpoint (was server.foundation_model set?)")
    tag = latest.read_text().strip()
    state = get_fp32_state_dict_from_zero_checkpoint(str(shards), tag=tag)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    path = target / "foundation_model.safetensors"
    save_file({name: tensor.contiguous().clone() for name, tensor in state.items()}, path)  # tied weights: own copies
    return path
