"""The client Ray actor: holds private shards, trains on request, returns deltas."""

from __future__ import annotations

import os
import time
import traceback

import numpy as np
import pyarrow as pa
import ray

from fedray.client.attacks import ATTACKS
from fedray.client.state import ClientStateStore
from fedray.foundation.distill import Teaching, TopK, kd_regularizer, public_logits, public_tensor
from fedray.client.train import build_optimizer, train_local
from fedray.config.schema import RunConfig
from fedray.data.federated import DataInfo
from fedray.models.adapters import FoldedMerges, RankedAdapters, lora_layout
from fedray.models.build import build_model
from fedray.models.device import assigned_device, limit_threads
from fedray.models.flat import get_delta, param_spec, set_flat
from fedray.models.tasks import TASKS
from fedray.types import ClientId, ClientResult, FitInstructions


class ClientActor:
    """Hosts one client (`actor_per_client`) or many simulated ones (`pool`).

    The shards are given at creation and never leave the actor. The model is
    built once; each round it is loaded with the broadcast global weights, trained
    locally, and the difference is returned as one flat float32 array.

    With LoRA (`model.peft`), the base weights load once and stay here; only the
    adapter of each hosted client's rank (`ranks`) is loaded and returned.
    """

    def __init__(
        self,
        cfg: RunConfig,
        info: DataInfo,
        shards: dict[ClientId, pa.Table],
        states: dict[ClientId, dict] | None = None,
        public: np.ndarray | None = None,
        ranks: dict[ClientId, int] | None = None,
    ):
        limit_threads(cfg.clients.resources.num_cpus)
        self.cfg = cfg
        self.device = assigned_device()
        self.task = TASKS.build(info.task)
        self.model = build_model(cfg.model, info, cfg.seed).to(self.device)
        self.spec = param_spec(self.model)
        self.ranks = dict(ranks or {})
        self.adapters = None
        if cfg.model.peft is not None:
            self.layout = lora_layout(self.spec, cfg.model.peft)
            self.adapters = RankedAdapters(self.model, cfg.model.peft, self.ranks.values())
            self.merged = FoldedMerges()
        self.shards = shards
        self._tensors: dict[ClientId, object] = {}
        self.state = ClientStateStore(states)
        attack = cfg.clients.attack
        self._attack = ATTACKS.get(attack.name) if attack.name and attack.clients else None
        # Reused for every result: Ray copies a return value into the object store
        # before this actor runs its next call, so one buffer serves all rounds.
        self._delta = np.empty(self.spec.num_params, dtype=np.float32)
        self.task_name = info.task
        self.public = None if public is None else public_tensor(info.task, public, self.device)
        # torch.optim imports torch._dynamo on first use (~1.4 s): pay it at start-up,
        # in parallel with the other actors, rather than inside round 1.
        build_optimizer(self.model, cfg.train)

    def describe(self) -> dict:
        """Where this actor runs and what it holds (for logs and placement checks)."""
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "device": str(self.device),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "clients": sorted(self.shards),
        }

    def fit(self, ins: FitInstructions, global_params: np.ndarray, teacher: Teaching | None = None,
            merges: tuple = ()) -> ClientResult:
        """Train client `ins.client_id` from `global_params` (in its own layout) after
        folding any new `merges` into the base, distilling from `teacher` on the public
        set if given; failures come back as results."""
        start = time.perf_counter()
        try:
            return self._fit(ins, global_params, merges, start, teacher)
        except Exception as exc:  # a failed client is data for the server, not a crash
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ClientResult(
                client_id=ins.client_id,
                server_round=ins.server_round,
                wall_s=time.perf_counter() - start,
                error=detail,
            )

    def _fit(self, ins: FitInstructions, global_params: np.ndarray, merges: tuple, start: float,
             teacher: Teaching | None) -> ClientResult:
        cid = ins.client_id
        if cid not in self.shards:
            raise KeyError(f"client {cid} is not hosted on this actor")
        data = self._tensors.get(cid)
        if data is None:
            data = self._tensors[cid] = self.task.prepare(self.shards[cid], self.device)
        spec = self._activate(cid, merges)
        set_flat(self.model, spec, global_params)
        result = train_local(
            self.model,
            self.task,
            data,
            self.cfg.train,
            seed=ins.seed,
            optimizer_state=self.state.get(cid, "optimizer"),
            regularizer=self._distillation(teacher),
        )
        self.state.put(cid, "optimizer", result.optimizer_state)
        out = self._delta if spec.num_params == self._delta.size else np.empty(spec.num_params, np.float32)
        update = get_delta(self.model, spec, global_params, out=out)
        if self._attack is not None and cid in self.cfg.clients.attack.clients:
            update = self._attack(update, self.cfg.clients.attack)
        return ClientResult(
            client_id=cid,
            server_round=ins.server_round,
            num_examples=result.num_examples,
            update=update,
            train_loss=result.loss,
            wall_s=time.perf_counter() - start,
            metrics={"steps": float(result.steps), "loss_sq": result.loss_sq},
            public_logits=self._public_logits(),
        )

    def _distillation(self, teaching: Teaching | None):
        kd = self.cfg.server.distill
        if teaching is not None and teaching.public is not None:  # a refreshed public set
            self.public = public_tensor(self.task_name, teaching.public, self.device)
        if teaching is None or teaching.teacher is None or self.public is None or kd.weight == 0:
            return None
        return kd_regularizer(self.task_name, self.public, teaching.teacher, kd.weight, kd.temperature,
                              self.cfg.train.batch_size, kd.rest_mass)

    def _public_logits(self) -> TopK | None:
        """This client's top-k logits on the public set (clients -> server transfer)."""
        if self.public is None or not self.cfg.server.distill.client_to_server:
            return None
        kd = self.cfg.server.distill
        return public_logits(self.model, self.task_name, self.public, kd.top_k, kd.temperature)

    def _activate(self, cid: ClientId, merges: tuple):
        """The travelling parameters of this client: its rank's adapter over a base
        that holds every merge so far (LoRA), or the whole model's."""
        if self.adapters is None:
            return self.spec
        self.merged.catch_up(self.model, self.layout, merges, fetch=ray.get)
        return self.adapters.activate(self.ranks.get(cid, self.cfg.model.peft.r))

    def has_state(self, client_id: ClientId) -> bool:
        return bool(self.state.get(client_id, "optimizer"))

    def export_state(self) -> dict[ClientId, dict]:
        """Kept per-client state, for the server's checkpoint."""
        return self.state.export()
