"""Config of the server's foundation model and of knowledge transfer with the clients."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import Any, Dict, List, Optional

from fedray.config.sections import Dtype, ModelConfig, PlacementStrategy, ResourcesConfig


@dataclasses.dataclass
class FoundationConfig:
    """The server's own large model, sharded with DeepSpeed ZeRO over Ray actors."""

    model: Optional[ModelConfig] = None
    """Model spec as in `model`; null: no server-side foundation model."""
    zero_stage: int = 3
    """DeepSpeed ZeRO stage 1, 2 or 3 (3 partitions the parameters too)."""
    num_workers: int = 2
    """Ranks of the ZeRO group: one per GPU, or one per CPU process without GPUs."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Ray resources of each worker (e.g. `num_gpus: 1`)."""
    placement_strategy: PlacementStrategy = PlacementStrategy.PACK
    """How the ranks' placement group spreads over nodes: PACK, SPREAD, STRICT_PACK
    or STRICT_SPREAD. The group is reserved before the first round."""
    ready_timeout_s: float = 300.0
    """How long to wait for the group's resources to become free."""
    offload: bool = False
    """Offload optimizer state (and parameters under ZeRO-3) to CPU memory."""
    dtype: Optional[Dtype] = None
    """`float32`, `bfloat16` or `float16`; null: bfloat16 on GPUs that support it,
    float32 on CPUs."""
    lr: float = 1e-3
    """AdamW learning rate of the ZeRO group."""
    micro_batch_size: int = 8
    """Examples per rank per step."""
    timeout_s: float = 120.0
    """Collective-operation timeout: a rank whose peer died errors out instead of hanging."""
    deepspeed: Dict[str, Any] = field(default_factory=dict)
    """Passed to DeepSpeed over the generated config, untouched (DeepSpeed validates it)."""

    def errors(self) -> list[str]:
        out = []
        if self.model is None:
            return out
        if self.zero_stage not in (1, 2, 3):
            out.append(f"server.foundation_model.zero_stage must be 1, 2 or 3, got {self.zero_stage}")
        if self.num_workers < 1:
            out.append(f"server.foundation_model.num_workers must be >= 1, got {self.num_workers}")
        if not self.lr > 0:
            out.append(f"server.foundation_model.lr must be > 0, got {self.lr}")
        if self.micro_batch_size < 1:
            out.append(f"server.foundation_model.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if not self.timeout_s > 0:
            out.append(f"server.foundation_model.timeout_s must be > 0, got {self.timeout_s}")
        if not self.ready_timeout_s > 0:
            out.append(f"server.foundation_model.ready_timeout_s must be > 0, got {self.ready_timeout_s}")
        if not self.resources.as_bundle():
            out.append("server.foundation_model.resources must request some resource "
                       "(Ray rejects empty placement-group bundles)")
        out += self.model.errors()
        out += self.resources.errors("server.foundation_model.resources")
        return out


class PublicSource(enum.Enum):
    """Where the public set for knowledge transfer comes from."""

    dataset = "dataset"
    """`server.distill.public_size` rows held out of the clients' data (real examples)."""
    generate = "generate"
    """Sequences sampled by the foundation model itself (text only)."""


@dataclasses.dataclass
class PublicConfig:
    """The public set: real rows held out of the clients' data, or synthetic text that
    the foundation model samples under ZeRO (cached in the run directory)."""

    source: PublicSource = PublicSource.dataset
    """`dataset` (held-out rows, `server.distill.public_size` of them) or `generate`."""
    num_sequences: int = 64
    """With `generate`: sequences sampled (spread over the ZeRO ranks)."""
    seq_len: Optional[int] = None
    """With `generate`: tokens per sequence, prompt included; null: `data.seq_len`."""
    temperature: float = 1.0
    """With `generate`: sampling temperature."""
    top_p: float = 0.95
    """With `generate`: nucleus sampling keeps the smallest set of tokens with this mass."""
    prompts: List[str] = field(default_factory=list)
    """With `generate`: sequence i starts with prompt i mod len(prompts) after an
    end-of-document token; empty: from the end-of-document token alone."""
    refresh_every: int = 0
    """With `generate`: sample a fresh set every N rounds (its tokens then travel with
    each broadcast); 0: one set for the whole run."""

    def errors(self) -> list[str]:
        out = []
        if self.num_sequences < 1:
            out.append(f"server.distill.public.num_sequences must be >= 1, got {self.num_sequences}")
        if self.seq_len is not None and self.seq_len < 2:
            out.append(f"server.distill.public.seq_len must be >= 2 or null, got {self.seq_len}")
        if not self.temperature > 0:
            out.append(f"server.distill.public.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            out.append(f"server.distill.public.top_p must be in (0, 1], got {self.top_p}")
        if self.refresh_every < 0:
            out.append(f"server.distill.public.refresh_every must be >= 0, got {self.refresh_every}")
        return out

    @property
    def generated(self) -> bool:
        return self.source is PublicSource.generate


@dataclasses.dataclass
class DistillConfig:
    """Knowledge transfer between the server's foundation model and the clients'
    models, on a public (non-private) set of inputs."""

    public_size: int = 256
    """Examples (or sequences) held out of the clients' data as the public set
    (with `public.source: dataset`)."""
    public: PublicConfig = field(default_factory=PublicConfig)
    """Where the public set comes from: held-out rows, or text the foundation model samples."""
    server_to_client: bool = False
    """Send the foundation model's top-k logits on the public set with each broadcast;
    clients add `weight` x KD loss to their local objective."""
    client_to_server: bool = False
    """Clients return top-k logits on the public set; the server distils their
    weighted mean into the foundation model with `server_steps` ZeRO steps."""
    temperature: float = 2.0
    """Knowledge-distillation temperature T."""
    rest_mass: bool = False
    """Also match the probability mass the teacher's top-k leaves over, as one more
    outcome (the student moves its total mass onto the teacher's likely tokens); false:
    renormalise both distributions over the top-k (the student matches how the teacher
    ranks them). The same when `top_k` covers every class."""
    weight: float = 0.5
    """lambda of the clients' distillation term."""
    top_k: int = 10
    """Logits kept per position (payload size against fidelity)."""
    server_steps: int = 5
    """ZeRO distillation steps the server takes per round (`client_to_server`)."""
    pretrain_steps: int = 0
    """Supervised ZeRO steps on the labelled public set before round 1: the
    transfer-learning phase of FedMD, so the foundation model starts as a useful teacher
    (next-token prediction on a text public set)."""

    def errors(self) -> list[str]:
        out = []
        if self.public_size < 1:
            out.append(f"server.distill.public_size must be >= 1, got {self.public_size}")
        if not self.temperature > 0:
            out.append(f"server.distill.temperature must be > 0, got {self.temperature}")
        if self.weight < 0:
            out.append(f"server.distill.weight must be >= 0, got {self.weight}")
        if self.top_k < 1:
            out.append(f"server.distill.top_k must be >= 1, got {self.top_k}")
        if self.server_steps < 0:
            out.append(f"server.distill.server_steps must be >= 0, got {self.server_steps}")
        if self.pretrain_steps < 0:
            out.append(f"server.distill.pretrain_steps must be >= 0, got {self.pretrain_steps}")
        elif self.pretrain_steps and self.public.generated:
            out.append("server.distill.pretrain_steps trains on a real public set; with "
                       "server.distill.public.source=generate there is none (set it to 0)")
        out += self.public.errors()
        return out

    @property
    def enabled(self) -> bool:
        return self.server_to_client or self.client_to_server


