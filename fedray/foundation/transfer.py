"""Knowledge transfer both ways between the server's foundation model and the clients.

server -> clients: the foundation model's top-k logits on the public inputs go
out with the round's broadcast; each client adds a distillation term to its
local loss. clients -> server: clients return their own top-k logits on the
same inputs; the server distils their example-weighted mean into the sharded
model with a few ZeRO steps. Both directions are switches in `server.distill`.
Logits are compared position by position over the teacher's top-k indices,
which requires the two models to share an output space (classes, or one
tokenizer's vocabulary); `fedray.foundation.checks` says so before the run starts.

The public set is real (rows held out of the clients' data) or synthetic: text
that the foundation model samples under ZeRO, saved in the run directory so a
resumed run reuses it, and optionally sampled afresh every N rounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from fedray.config.schema import DistillConfig, FoundationConfig
from fedray.data.federated import DataInfo
from fedray.foundation.distill import TopK, aggregate_top_k
from fedray.foundation.group import FoundationGroup
from fedray.foundation.public import (StoredDir, assign_prefixes, cache_set, cached_set, prompt_prefixes,
                                      public_seq_len, public_task)

if TYPE_CHECKING:
    from fedray.config.schema import RunConfig
    from fedray.data.federated import FederatedDataset


class Distiller:
    """Owns the foundation group and the public set; one call per direction per round.

    Every random choice that depends on what ran before (warm-up and distillation
    minibatches) is drawn from `self.rng`, so saving its state saves them all. The
    seed of each generated set is a function of the run's seed and the set's number
    alone: a resumed run finds the set in the cache or samples the same one again,
    and either way leaves `self.rng` where the uninterrupted run had it.
    """

    def __init__(self, foundation: FoundationConfig, cfg: DistillConfig, info: DataInfo,
                 public_inputs: np.ndarray | None, public_labels: np.ndarray | None = None, seed: int = 0,
                 name_prefix: str = "fedray", placement_group=None, prefixes: Sequence[np.ndarray] = (),
                 seq_len: int | None = None, cache: StoredDir | None = None):
        self.cfg = cfg
        self.task = info.task
        self.public_inputs = public_inputs
        """The public set in use: held-out rows, or the current generated set."""
        self.public_labels = public_labels
        self.prefixes, self.seq_len, self.cache = list(prefixes), seq_len, cache
        self.generation: int | None = None
        """Which generated set is current (refresh count), None before the first."""
        self.group = FoundationGroup(foundation, info, seed, name_prefix, placement_group)
        self.micro_batch = foundation.micro_batch_size
        self.rng = np.random.default_rng([seed, 0xD157])
        self.seed = seed

    @classmethod
    def for_run(cls, cfg: "RunConfig", dataset: "FederatedDataset", name_prefix: str, placement_group=None,
                cache: StoredDir | None = None) -> "Distiller":
        """The run's distiller: public rows from `dataset`, or prompts to generate from;
        generated sets are cached under `cache`."""
        inputs = labels = None
        if dataset.public is not None:
            inputs, labels = public_task(dataset.info.task).arrays(dataset.public)
        generated = cfg.server.distill.public.generated
        return cls(cfg.server.foundation_model, cfg.server.distill, dataset.info, inputs, labels, cfg.seed,
                   name_prefix, placement_group, prompt_prefixes(cfg) if generated else (),
                   public_seq_len(cfg) if generated else None, cache)

    def begin_round(self, server_round: int) -> None:
        """Make the public set of `server_round` current: with `source: generate`, the set
        sampled for it (from the cache if this run already sampled it, else now)."""
        public = self.cfg.public
        if not public.generated:
            return
        index = (server_round - 1) // public.refresh_every if public.refresh_every else 0
        if index == self.generation:
            return
        first_round = 1 + index * public.refresh_every
        where = None if self.cache is None else self.cache / f"round_{first_round:06d}.npy"
        ids = None if where is None else cached_set(where)
        if ids is None:
            seed = int(np.random.SeedSequence([self.seed, 0x6E4, index]).generate_state(1, np.uint64)[0] >> 1)
            ids = self.group.generate(assign_prefixes(self.prefixes, public.num_sequences), self.seq_len,
                                      public.temperature, public.top_p, seed)
            if where is not None:
                cache_set(where, ids)
        self.public_inputs, self.generation = ids, index

    def pretrain(self, steps: int) -> float:
        """Supervised steps on the labelled (or text) public set, FedMD's transfer phase; last loss."""
        loss = float("nan")
        for _ in range(steps):
            batches = []
            for part in self._rank_batches():
                batch = {"inputs": self.public_inputs[part]}
                if self.public_labels is not None:
                    batch["labels"] = self.public_labels[part]
                batches.append(batch)
            loss = self.group.train_step(batches, "supervised")
        return loss

    def _rank_batches(self) -> list[np.ndarray]:
        """One random micro-batch of public row indices per rank."""
        world = len(self.group.workers)
        want = self.micro_batch * world
        pick = self.rng.choice(len(self.public_inputs), size=want, replace=len(self.public_inputs) < want)
        return np.array_split(pick, world)

    def teacher(self) -> TopK | None:
        """This round's `teacher` payload: the foundation model's top-k distribution on
        the public set at the distillation temperature (server -> clients); None if off."""
        if not self.cfg.server_to_client:
            return None
        return self.group.top_k(self.public_inputs, self.cfg.top_k, self.cfg.temperature)

    def refreshed_public(self) -> np.ndarray | None:
        """This round's `public` payload: the current generated set's token rows when the
        set is refreshed during the run (clients hold only the first); else None."""
        public = self.cfg.public
        return self.public_inputs if public.generated and public.refresh_every > 0 else None

    def absorb(self, client_logits: Sequence[TopK], weights: Sequence[float]) -> float:
        """Distil the clients' weighted mean into the foundation model; the last KD loss."""
        if not self.cfg.client_to_server or not client_logits or self.cfg.server_steps == 0:
            return float("nan")
        target = aggregate_top_k(list(client_logits), list(weights), self.cfg.top_k)
        loss = float("nan")
        for _ in range(self.cfg.server_steps):
            batches = [{"inputs": self.public_inputs[part], "teacher_values": target.values[part],
                        "teacher_indices": target.indices[part]}
                       for part in self._rank_batches()]
            loss = self.group.train_step(batches, "distill", temperature=self.cfg.temperature,
                                         rest_mass=self.cfg.rest_mass)
        return loss

    def kd_loss_on_public(self, target: TopK) -> float:
        """KD loss of the foundation model against `target` over the whole public set."""
        return self.group.kd_loss(self.public_inputs, target, self.cfg.temperature, self.cfg.rest_mass)

    def save(self, directory: str, tag: str) -> None:
        self.group.save(directory, tag)

    def load(self, directory: str, tag: str) -> None:
        self.group.load(directory, tag)

    def shutdown(self) -> None:
        self.group.shutdown()
