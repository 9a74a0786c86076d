"""`model.quantization` (a frozen base in 4 or 8 bits, QLoRA) and `train.objective` (DPO):
the settings of fine-tuning a large frozen base."""

from __future__ import annotations

import dataclasses
import enum


class QuantType(enum.Enum):
    """The 4-bit data type (bitsandbytes' `bnb_4bit_quant_type`)."""

    nf4 = "nf4"
    """NormalFloat4: levels at the quantiles of a normal distribution (Dettmers et al.,
    2023, QLoRA), the better fit for weights that are roughly normal."""
    fp4 = "fp4"
    """A plain 4-bit float."""


class ComputeDtype(enum.Enum):
    """The dtype the quantised layers dequantise into for their matmuls."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclasses.dataclass
class QuantizationConfig:
    """A quantised frozen base (`model.name: hf_causal_lm` with `model.peft`): its linear
    layers are stored in `bits` bits; the LoRA adapters stay float32, train, and are
    all that travels. The server's evaluation model is quantised alike."""

    bits: int = 4
    """4 (`type` decides the format) or 8 (LLM.int8, absmax per row)."""
    type: QuantType = QuantType.nf4
    """`nf4` or `fp4`; 4-bit only."""
    compute_dtype: ComputeDtype = ComputeDtype.float32
    """Dtype of the matmuls of 4-bit layers (bitsandbytes' `bnb_4bit_compute_dtype`);
    8-bit layers compute in float16 whatever this says."""
    double_quant: bool = False
    """Quantise the 4-bit blocks' scales too (about 0.4 bits a weight saved)."""

    def errors(self) -> list[str]:
        if self.bits not in (4, 8):
            return [f"model.quantization.bits must be 4 or 8, got {self.bits}"]
        return []


class Objective(enum.Enum):
    """What local training minimises."""

    task = "task"
    """The dataset's own loss: cross-entropy, next-token NLL; on `preferences` the NLL
    of the chosen completions (supervised fine-tuning)."""
    dpo = "dpo"
    """Direct Preference Optimization (Rafailov et al., 2023) on `data.dataset:
    preferences`, against the frozen base with the adapters disabled as reference."""


def objective_problems(cfg) -> list[str]:
    """`train.objective` against the data and model it needs (`cfg`: a RunConfig)."""
    out = []
    if cfg.train.objective is Objective.dpo:
        if cfg.data.dataset != "preferences":
            out.append(f"train.objective=dpo needs data.dataset=preferences (pairs), got {cfg.data.dataset}")
        if cfg.model.peft is None:
            out.append("train.objective=dpo takes the frozen base with adapters disabled as its reference "
                       "model: set model.peft")
        if cfg.train.dp is not None:
            out.append("train.objective=dpo cannot be combined with train.dp")
    return out


def quantized_base_problems(model_name: str, peft) -> list[str]:
    """A quantised base is frozen and its weights are never rewritten (`peft`: the
    model's PeftConfig or None)."""
    out = []
    if model_name != "hf_causal_lm":
        out.append(f"model.quantization needs model.name=hf_causal_lm, got {model_name}")
    if peft is None:
        out.append("model.quantization freezes the base: set model.peft (only the adapters train)")
    elif peft.aggregation == "stack":
        out.append("model.quantization cannot take model.peft.aggregation=stack, which folds "
                   "updates into the base weights; use aggregation=mean")
    return out
