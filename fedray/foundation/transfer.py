"""Knowledge transfer both ways between the server's foundation model and the clients.

server -> clients: the foundation model's top-k logits on the public inputs go
out with the round's broadcast; each client adds a distillation term to its
local loss. clients -> server: clients return their own top-k logits on the
same inputs; the server distils their example-weighted mean into the sharded
model with a few ZeRO steps. Both directions are switches in `server.distill`.
Logits are compared position by position over the teacher's top-k indices,
which requires the two models to share an output space (classes, or one
tokenizer's vocabulary); `check_compatible` says so before the run starts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedray.config.schema import DistillConfig, FoundationConfig
from fedray.data.federated import DataInfo
from fedray.foundation.distill import TopK, aggregate_top_k, top_k
from fedray.foundation.group import FoundationGroup


def output_size(model) -> int:
    """Width of a model's logits: a transformers config's vocabulary, or the last
    linear layer's outputs."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "vocab_size", None):
        return int(config.vocab_size)
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("cannot tell the model's output size (no Linear layer, no config.vocab_size)")
    return int(linears[-1].out_features)


def check_compatible(client_outputs: int, server_outputs: int) -> None:
    """Distillation maps output index i to index i: the output spaces must agree."""
    if client_outputs != server_outputs:
        raise ValueError(
            f"server.distill: the clients' model has {client_outputs} outputs and the foundation "
            f"model {server_outputs}; knowledge transfer needs a shared output space (the same "
            "classes, or the same tokenizer and vocabulary)")


class Distiller:
    """Owns the foundation group and the public inputs; one call per direction per round."""

    def __init__(self, foundation: FoundationConfig, cfg: DistillConfig, info: DataInfo,
                 public_inputs: np.ndarray, public_labels: np.ndarray, seed: int, name_prefix: str,
                 placement_group=None):
        self.cfg = cfg
        self.public_inputs = public_inputs
        self.public_labels = public_labels
        self.group = FoundationGroup(foundation, info, seed, name_prefix, placement_group)
        self.micro_batch = foundation.micro_batch_size
        self.rng = np.random.default_rng([seed, 0xD157])

    def pretrain(self, steps: int) -> float:
        """Supervised steps on the labelled public set (FedMD's transfer phase); last loss."""
        loss = float("nan")
        for _ in range(steps):
            loss = self.group.train_step(
                [{"inputs": self.public_inputs[part], "labels": self.public_labels[part]}
                 for part in self._rank_batches()], "cross_entropy")
        return loss

    def _rank_batches(self) -> list[np.ndarray]:
        """One random micro-batch of public row indices per rank."""
        world = len(self.group.workers)
        want = self.micro_batch * world
        pick = self.rng.choice(len(self.public_inputs), size=want, replace=len(self.public_inputs) < want)
        return np.array_split(pick, world)

    def teacher(self) -> TopK | None:
        """The foundation model's top-k logits on the public inputs (server -> clients)."""
        if not self.cfg.server_to_client:
            return None
        logits = self.group.logits(self.public_inputs)
        return top_k(logits, self.cfg.top_k)

    def absorb(self, client_logits: Sequence[TopK], weights: Sequence[float]) -> float:
        """Distil the clients' weighted mean into the foundation model; the last KD loss."""
        if not self.cfg.client_to_server or not client_logits or self.cfg.server_steps == 0:
            return float("nan")
        target = aggregate_top_k(list(client_logits), list(weights), self.cfg.top_k, self.cfg.temperature)
        loss = float("nan")
        for _ in range(self.cfg.server_steps):
            batches = [{"inputs": self.public_inputs[part], "teacher_values": target.values[part],
                        "teacher_indices": target.indices[part]}
                       for part in self._rank_batches()]
            loss = self.group.train_step(batches, "distill", temperature=self.cfg.temperature)
        return loss

    def kd_loss_on_public(self, target: TopK) -> float:
        """KD loss of the foundation model against `target` on all public inputs."""
        import torch

        from fedray.foundation.distill import kd_loss

        logits = torch.from_numpy(np.array(self.group.logits(self.public_inputs)))
        return float(kd_loss(logits, target, self.cfg.temperature))

    def save(self, directory: str, tag: str) -> None:
        self.group.save(directory, tag)

    def load(self, directory: str, tag: str) -> None:
        self.group.load(directory, tag)

    def shutdown(self) -> None:
        self.group.shutdown()
