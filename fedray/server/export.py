"""`fedray export`: a finished LoRA run's global adapter in PEFT format (and the merged
model), and a server foundation model's consolidated fp32 weights.

The export is a folder that works on another machine with transformers and peft
alone: `base/` (the base model: the run's checkpoint, hard-linked where it can be,
or the random weights built from `model.config`), `adapter/` (PEFT format), and
`merged/` with `--merged`; each carries the run's tokenizer (the byte-level one
as tokenizer files that `AutoTokenizer` loads). The adapter's
`base_model_name_or_path` is `base`, relative to the export folder, so
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out/"base"), out/"adapter")`
loads it wherever the folder is copied. For `aggregation: stack` the exact
updates already folded into the base each round are exported too: the adapter
is their concatenation with the current one, so its rank is their total.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from typing import TYPE_CHECKING, Sequence

from fedray.config.load import load_run_config
from fedray.config.schema import RunConfig
from fedray.data.datasets import DataInfo
from fedray.data.text import text_info
from fedray.data.tokenize import TOKENIZERS
from fedray.models.adapters import FoldedMerges, add_lora, lora_layout
from fedray.models.build import build_model
from fedray.models.flat import param_spec, set_flat
from fedray.models.hf import resolve_checkpoint
from fedray.models.quantize import dequantized_weights
from fedray.server.checkpoint import list_checkpoints, load_checkpoint
from fedray.server.state import ServerState
from fedray.server.state_checks import RunShape

if TYPE_CHECKING:
    import torch


def load_lora_run(run_dir: str | Path, allow_code: Sequence[str] = ()) -> tuple[RunConfig, ServerState]:
    """The config and newest checkpoint of a LoRA run directory (code its config names
    only if `allow_code` covers it: `fedray.config.trust`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a fedray run directory (no config.yaml)")
    cfg = load_run_config(run_dir / "config.yaml", allow_code)
    if cfg.model.peft is None:
        raise ValueError(f"{run_dir} did not train LoRA adapters (model.peft is null); nothing to export")
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise ValueError(f"no checkpoint under {run_dir / 'checkpoints'} (server.checkpoint_every was 0?)")
    return cfg, load_checkpoint(found[-1], RunShape.of(cfg))


def global_model(cfg: RunConfig, state: ServerState, info: DataInfo) -> "torch.nn.Module":
    """The server's global model as it evaluates it: merges folded, adapter loaded."""
    model = build_model(cfg.model, info, cfg.seed)
    spec = param_spec(model)
    if state.merges:
        FoldedMerges().catch_up(model, lora_layout(spec, cfg.model.peft), state.merges)
    set_flat(model, spec, state.params)
    return model.eval()


def export_run(run_dir: str | Path, out: str | Path, merged: bool = False,
               allow_code: Sequence[str] = ()) -> dict[str, Path]:
    """Everything exportable from a run: the LoRA adapter (and base, merged model) and,
    if the server held one, the foundation model's consolidated fp32 state dict."""
    shards = Path(run_dir) / "checkpoints" / "foundation" / "latest"
    paths: dict[str, Path] = {}
    if shards.is_file():
        from fedray.foundation.export import export_foundation

        paths["foundation"] = export_foundation(run_dir, out)
        if not load_run_config(Path(run_dir) / "config.yaml", allow_code).model.peft:
            return paths
    return {**paths, **export_adapter(run_dir, out, merged, allow_code)}


def export_adapter(run_dir: str | Path, out: str | Path, merged: bool = False,
                   allow_code: Sequence[str] = ()) -> dict[str, Path]:
    """Write `out/adapter` (and `out/base`, `out/merged` where they apply); their paths."""
    out = Path(out)
    cfg, state = load_lora_run(run_dir, allow_code)
    peft = cfg.model.peft
    tokenizer = TOKENIZERS.build(cfg.data.tokenizer, cfg.model)
    info = text_info(cfg.data.seq_len, tokenizer.vocab_size)
    paths: dict[str, Path] = {"base": out / "base"}
    if cfg.model.path is None:
        build_model(dataclasses.replace(cfg.model, peft=None, quantization=None), info, cfg.seed).save_pretrained(paths["base"])
    else:
        shutil.copytree(resolve_checkpoint(cfg.model), paths["base"], copy_function=_link_or_copy, dirs_exist_ok=True)

    model = build_model(cfg.model, info, cfg.seed)
    spec = param_spec(model)
    adapter = state.params
    if state.merges:
        layout = lora_layout(spec, peft)
        adapter = layout.concat([*state.merges, state.params])
        base = build_model(dataclasses.replace(cfg.model, peft=None), info, cfg.seed)
        model = add_lora(base, peft, rank=layout.rank_of(adapter))
        spec = param_spec(model)
    set_flat(model, spec, adapter)
    model.peft_config["default"].base_model_name_or_path = "base"  # relative to the export folder
    paths["adapter"] = out / "adapter"
    model.save_pretrained(paths["adapter"])
    if merged:
        paths["merged"] = out / "merged"
        if cfg.model.quantization is not None:
            model = dequantized(cfg, info, adapter)
        model.merge_and_unload().save_pretrained(paths["merged"])
    for kind in ("base", "adapter", "merged"):  # a checkpoint's base/ has its own (and is hard-linked)
        if kind in paths and (kind != "base" or cfg.model.path is None):
            save_tokenizer(tokenizer, paths[kind])
    return paths



def dequantized(cfg: RunConfig, info: DataInfo, adapter) -> "torch.nn.Module":
    """The global model of a quantised run as a float PEFT model: the float architecture
    holding the dequantised weights of the quantised base (what the adapters were
    trained against, not the original float weights), with the adapter loaded, ready
    to merge."""
    import torch

    quantized_base = build_model(dataclasses.replace(cfg.model, peft=None), info, cfg.seed)
    weights = dequantized_weights(quantized_base)  # before any forward pass (see its docstring)
    del quantized_base
    base = build_model(dataclasses.replace(cfg.model, peft=None, quantization=None), info, cfg.seed)
    with torch.no_grad():
        for name, weight in weights.items():
            base.get_submodule(name).weight.copy_(weight)
    model = add_lora(base, cfg.model.peft)
    set_flat(model, param_spec(model), adapter)
    return model


def save_tokenizer(tokenizer, folder: Path) -> None:
    """The run's tokenizer as files `AutoTokenizer.from_pretrained(folder)` loads."""
    inner = getattr(tokenizer, "tokenizer", None)  # a model's own transformers tokenizer
    (inner if inner is not None else tokenizer).save_pretrained(folder)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a base checkpoint's file (no second copy of the weights), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

