"""The client Ray actor: holds private shards, trains on request, returns named payloads."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import ray
import torch

from fedray.client.attacks import ATTACKS
from fedray.client.store import ClientStates, StateCodec, StateStore
from fedray.client.train import build_optimizer, train_local
from fedray.compress import build_codecs
from fedray.compress.downlink import BroadcastDecoder
from fedray.config.schema import RunConfig
from fedray.data.federated import DataInfo
from fedray.data.plan import ShardPlan
from fedray.data.shards import hold_out
from fedray.foundation.distill import public_tensor
from fedray.foundation.term import client_terms
from fedray.lifecycle.continual import Schedule
from fedray.lifecycle.watermark import watermark_terms
from fedray.models.adapters import FoldedMerges, RankedAdapters, lora_layout
from fedray.models.build import build_model
from fedray.models.device import assigned_device, limit_threads, peak_memory_mb
from fedray.models.flat import get_delta, param_spec, set_flat
from fedray.models.hf import enable_gradient_checkpointing
from fedray.models.tasks import build_task
from fedray.personalization import Fit, build_personalization, local_names, personalize
from fedray.personalization.adapter import PERSONAL
from fedray.personalization.client import PersonalParts
from fedray.privacy import with_privacy
from fedray.privacy.dpsgd import account
from fedray.privacy.secagg.sessions import Sessions
from fedray.strategy.algorithm import KeptState, build_algorithm, initial_client_state
from fedray.strategy.terms import LocalRound
from fedray.types import (ClientId, ClientResult, Context, EvaluateInstructions, EvaluateResult, FailureKind,
                          FitInstructions, StateRef)

PERSONAL_EVAL = 0xE7A1
"""Mixed into the seed of a personal model's pre-evaluation training (finetune)."""
NOT_LOADED = "the client's shard is not loaded on its actor (restarted?)"
_EVAL_BATCH = 256
"""Held-out rows per forward pass of a client's evaluation."""


class NotLoaded(Exception):
    """A fresh (restarted) actor was asked to train before the server re-sent its shards."""


CLIENT_FAILURES: tuple[type[BaseException], ...] = (
    ValueError, ArithmeticError, OSError, MemoryError, torch.cuda.OutOfMemoryError, NotLoaded)
"""Why a client may fail a round without anything being wrong with fedray: its data,
its numerics, its machine. Such a failure is a result the server counts; any other
exception is a bug (in fedray or in user code) and stops the run with its traceback."""


class ComponentError(RuntimeError):
    """An exception raised inside a component on a client (an objective term, a client
    transform or codec; fedray's or the user's): a bug, not the client's failure, so it
    stops the run with its traceback, naming the component's config key."""


def in_component(name: str, call, *args):
    """`call(*args)`; an exception that would pass for a client failure, re-raised as the
    bug of component `name`."""
    try:
        return call(*args)
    except CLIENT_FAILURES as exc:
        raise ComponentError(f"{name} raised {type(exc).__name__}: {exc}") from exc


def failure_kind(exc: BaseException) -> FailureKind:
    """The kind of a client failure (`CLIENT_FAILURES`)."""
    if isinstance(exc, NotLoaded):
        return FailureKind.restarted
    return FailureKind.numeric if isinstance(exc, ArithmeticError) else FailureKind.data


class ClientActor:
    """Hosts one client (`actor_per_client`) or many simulated ones (`pool`).

    Constructor arguments are small (config, data description, client ids), so Ray can
    restart the actor without objects that may be gone; the shards arrive with `load`,
    and the server calls it again after a restart. Each client's kept state stays here
    and in the actor's state store (`fedray.client.store`): a fit trains from the state
    the server names (`FitInstructions.state`) and leaves the new one pending until the
    round's `commit`.

    With LoRA (`model.peft`), the base weights load once and stay here; only the
    adapter of each hosted client's rank (`ranks`) is loaded and returned.
    """

    def __init__(self, cfg: RunConfig, info: DataInfo, hosted: Sequence[ClientId],
                 ranks: dict[ClientId, int] | None = None, codec: StateCodec | None = None):
        self.setup = (cfg, info, hosted, ranks, codec)
        """What this actor was built for; `load` rebuilds it for another."""
        limit_threads(cfg.clients.resources.num_cpus)
        self.cfg, self.info, self.hosted = cfg, info, sorted(hosted)
        self.device = assigned_device()
        self.task = build_task(info, cfg)
        self.model = build_model(cfg.model, info, cfg.seed)
        personalize(cfg, self.model)  # a personal LoRA adapter, where the run has one
        self.model = self.model.to(self.device)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        local = local_names(cfg, self.model)
        self.spec = param_spec(self.model, exclude=local)
        self.personal = PersonalParts(build_personalization(cfg), local, self.model)
        """Each client's own part of the model (`clients.personalization`): never sent."""
        self.ranks = dict(ranks or {})
        self.adapters = None
        if cfg.model.peft is not None:
            self.layout = lora_layout(self.spec, cfg.model.peft)
            keep = (PERSONAL,) if self.personal.method is not None and self.personal.method.extend else ()
            self.adapters = RankedAdapters(self.model, cfg.model.peft, self.ranks.values(), keep)
            self.merged = FoldedMerges()
        codecs = build_codecs(cfg)
        terms = client_terms(cfg, info.task) + watermark_terms(cfg)
        self.algorithm = with_privacy(build_algorithm(cfg, terms, codecs.uplink), cfg, on_client=True)
        self.downlink = None if codecs.downlink is None else BroadcastDecoder(codecs.downlink, cfg.seed)
        self.secagg = Sessions()
        """Open secure-aggregation sessions of the hosted clients (secrets: never returned)."""
        where = cfg.clients.state_dir
        store = None if where is None or codec is None else StateStore(where, min(hosted), codec)
        self.states = ClientStates(store, hosted, reset_lost=cfg.clients.state_lost.value == "reset")
        """The hosted clients' kept states: current, pending, and their store."""
        self.shards: Mapping[ClientId, pa.Table] = {}
        self.held_out: dict[ClientId, pa.Table] = {}
        """Each hosted client's held-out rows (`data.client_test_fraction`): evaluation only."""
        self._held_tensors: dict[ClientId, Any] = {}
        self.sources: dict[ClientId, str] = {}
        """Where a site client's rows were read: its path and the digest of its content."""
        self._tensors: dict[ClientId, tuple[int, Any]] = {}
        self.public = None
        self.schedule: Schedule | None = None
        attack = cfg.clients.attack
        self._attack = ATTACKS.build(attack.name) if attack.name and attack.clients else None
        # Reused for every result: Ray copies a return value into the object store
        # before this actor runs its next call, so one buffer serves all rounds.
        self._delta = np.empty(self.spec.num_params, dtype=np.float32)
        # torch.optim imports torch._dynamo on first use (~1.4 s): pay it at start-up,
        # in parallel with the other actors, rather than inside round 1.
        build_optimizer(self.model, cfg.train)

    def load(self, shards: ShardPlan | Mapping[ClientId, pa.Table], public: np.ndarray | None = None,
             schedule: Schedule | None = None, setup: tuple | None = None) -> dict:
        """Build the hosted clients' shards here, on this actor's node, from their plan (the
        dataset loaded here and their rows taken, or their sites' files read here; tests
        may hand shards themselves), and take the public inputs of knowledge transfer (as
        `fedray.foundation.public` arrays them) and the data schedule whose current task's
        view of a shard each round trains on; where this actor runs. With a `setup` (the
        constructor's arguments) other than its own, the actor first rebuilds itself as a
        new one would be: a warm actor taken over by the next run, or one Ray restarted
        with the arguments it was first created with."""
        # The codec's functions (partials) compare by identity once they have travelled:
        # the run an actor serves is told by the rest (a reload must not drop pending states)
        if setup is not None and setup[:4] != self.setup[:4]:
            self.__init__(*setup)
        self.sources = {}
        if isinstance(shards, ShardPlan):
            shards, self.sources = shards.build()
        assert sorted(shards) == self.hosted, "shards routed to the wrong actor"
        shards, self.held_out = hold_out(shards, self.cfg.data.client_test_fraction, self.cfg.seed)
        self.shards, self._tensors, self._held_tensors, self.schedule = shards, {}, {}, schedule
        # Prepared now, in parallel with the other actors' start-up: for some tasks this
        # is real work (segmenting images into granular balls), not just a copy. With a
        # data schedule each task's view is prepared when the client first trains on it.
        if schedule is None:
            for cid in shards:
                self._data(cid)
        self.share_public(public)
        return self.describe()

    def share_public(self, public: np.ndarray | None) -> None:
        """Take the public inputs of knowledge transfer (None: there are none)."""
        self.public = None if public is None else public_tensor(self.info.task, public, self.device)

    def describe(self) -> dict:
        """Where this actor runs and what it holds (for logs and placement checks)."""
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "device": str(self.device),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "clients": self.hosted,
            "loaded": bool(self.shards),
            "num_examples": {cid: self.shards[cid].num_rows for cid in self.shards},
            "sources": dict(self.sources),
        }

    def fit(self, ins: FitInstructions, merges: tuple, *payloads: Any) -> ClientResult:
        """Train client `ins.client_id` from the broadcast `payloads` (named by
        `ins.payloads`; `params` first, in its own layout) and its kept state as of
        `ins.state`, after folding any new `merges` into the base. A client failure
        (`CLIENT_FAILURES`) comes back as a result; anything else raises (a lost state,
        `StateLost`, too, unless `clients.state_lost: reset`)."""
        start = time.perf_counter()
        try:
            return self._fit(ins, merges, dict(zip(ins.payloads, payloads)), start)
        except CLIENT_FAILURES as exc:
            detail = NOT_LOADED if isinstance(exc, NotLoaded) else \
                "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ClientResult(client_id=ins.client_id, server_round=ins.server_round,
                                wall_s=time.perf_counter() - start, error=detail, failure=failure_kind(exc))

    def _fit(self, ins: FitInstructions, merges: tuple, payloads: dict, start: float) -> ClientResult:
        cid = ins.client_id
        task = 0 if self.schedule is None else self.schedule.task_of(ins.server_round, cid)
        data = self._data(cid, task)
        spec = self._activate(cid, merges)
        payloads, figures = self._decode_broadcast(payloads)
        params = payloads["params"]
        set_flat(self.model, spec, params)
        ctx = Context(ins.server_round, cid, self.cfg.seed, self.cfg.clients.num_clients, downlink=payloads,
                      spec=spec, config=ins.config, task=task)
        kept, reset = self.states.get(cid, ins.state, lambda: initial_client_state(self.algorithm, params))
        local = LocalRound(self.model, spec, params, payloads, ctx, self.cfg.train, self.task, self.public,
                           data=data)
        terms = self.algorithm.terms
        names = [self.algorithm.term_name(i) for i in range(len(terms))]
        regularizers = [_named(names[i], r) for i, (t, s) in enumerate(zip(terms, kept.terms))
                        if (r := in_component(names[i], t.objective, local, s)) is not None]
        self.personal.load(self.model, kept.personal)
        fit = Fit(self.task, data, self.cfg.train, ins.seed, kept.optimizer, _sum(regularizers), train_local)
        trained = self.personal.train(self.model, fit)
        out = self._delta if spec.num_params == self._delta.size else np.empty(spec.num_params, np.float32)
        delta = get_delta(self.model, spec, params, out=out)
        local = local._replace(delta=delta, steps=trained.steps)
        uplink, term_states = {}, []
        for name, term, term_state in zip(names, terms, kept.terms):
            sent, term_state = in_component(name, term.finish, local, term_state)
            uplink.update(sent)
            term_states.append(term_state)
        if self._attacks(cid) and self._attack.update is not None:
            delta = self._attack.update(delta, self.cfg.clients.attack, ctx)
        encoding = time.perf_counter()
        delta, chain_state = in_component(self.algorithm.client_chain_name, self.algorithm.client_transforms.apply,
                                          delta, kept.transforms, params, ctx)
        if self.algorithm.client_transforms.decode is not None:
            figures["encode_s"] = time.perf_counter() - encoding
        if "secagg" in payloads:  # secure aggregation: only the masked update leaves the client
            delta = self.secagg.masked_input(cid, payloads["secagg"], delta, trained.num_examples, ctx.rng(0x5EC))
        privacy = kept.privacy
        if self.cfg.train.dp is not None:
            privacy = account(kept.privacy, self.cfg.train.dp, trained.sample_rate, trained.steps)
        anchor = lambda: {n: torch.from_numpy(np.array(v)).to(self.device)  # noqa: E731 - Ditto's only
                          for n, v in spec.unflatten(params).items()}
        personal = self.personal.keep(self.model, kept.personal, anchor, fit)
        new_state = KeptState(trained.optimizer_state, tuple(term_states), chain_state, privacy, personal)
        pending = self.states.stage(cid, ins.seed, None if new_state.is_empty() else new_state, kept)
        return ClientResult(
            client_id=cid,
            server_round=ins.server_round,
            num_examples=trained.num_examples,
            payloads={"delta": delta, **uplink},
            pending=pending,
            train_loss=trained.loss,
            wall_s=time.perf_counter() - start,
            metrics={"steps": float(trained.steps), "loss_sq": trained.loss_sq, **figures,
                     "peak_memory_mb": peak_memory_mb(self.device),
                     **({"dp_epsilon": privacy.epsilon} if privacy is not None else {}),
                     **({"state_resets": 1.0} if reset else {})},
        )

    def evaluate(self, ins: EvaluateInstructions, merges: tuple, *payloads: Any) -> EvaluateResult:
        """Evaluate the broadcast global model (`params`, in this client's layout) on client
        `ins.client_id`'s held-out rows as model `global`, and each of its personal models
        (`personal_models`) under its name. Read-only: the client's kept state, its
        training generator and its privacy account are untouched; only metrics return.
        A client failure (`CLIENT_FAILURES`) comes back as a result, as in `fit`."""
        start = time.perf_counter()
        try:
            return self._evaluate(ins, merges, dict(zip(ins.payloads, payloads)), start)
        except CLIENT_FAILURES as exc:
            detail = NOT_LOADED if isinstance(exc, NotLoaded) else \
                "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return EvaluateResult(ins.client_id, ins.server_round, wall_s=time.perf_counter() - start,
                                  error=detail, failure=failure_kind(exc))

    def _evaluate(self, ins: EvaluateInstructions, merges: tuple, payloads: dict, start: float) -> EvaluateResult:
        cid = ins.client_id
        data = self._held_out_data(cid)
        spec = self._activate(cid, merges)
        set_flat(self.model, spec, payloads["params"])
        self.personal.load(self.model, None)  # the global model's personal part is the server's: the initial one
        models = {"global": self.model, **self.personal_models(cid, self.model, ins.state)}
        metrics = {name: _evaluate_model(self.task, model, data) for name, model in models.items()}
        return EvaluateResult(cid, ins.server_round, num_examples=self.task.num_examples(data), models=metrics,
                              wall_s=time.perf_counter() - start)

    def _held_out_data(self, cid: ClientId) -> Any:
        """The client's held-out rows on this actor's device, prepared once."""
        if cid not in self.shards:
            if cid in self.hosted:
                raise NotLoaded(cid)
            raise AssertionError(f"client {cid} is not hosted on this actor")
        if cid not in self.held_out or self.held_out[cid].num_rows == 0:
            raise ValueError(f"client {cid} has no held-out rows (data.client_test_fraction="
                             f"{self.cfg.data.client_test_fraction}, {self.shards[cid].num_rows} training rows)")
        if cid not in self._held_tensors:
            self._held_tensors[cid] = self.task.prepare(self.held_out[cid], self.device)
        return self._held_tensors[cid]

    def personal_models(self, cid: ClientId, global_model: torch.nn.Module,
                        ref: StateRef | None = None) -> dict[str, torch.nn.Module]:
        """Client `cid`'s own models to evaluate beside `global_model` ({"personal": model}
        with `clients.personalization` or `server.strategy.name: local`, else {}): a copy
        of the global model with the client's personal part from its committed state
        (`ref`, else the one this actor holds; the initial part before it first trained),
        and the method's pre-evaluation step (finetune's local steps) on its own data."""
        if not self.personal.active:
            return {}
        state = None
        if ref is not None:
            state = self.states.get(cid, ref, lambda: None)[0]
        elif cid in self.states.current:
            state = self.states.current[cid][1]
        seed = int(np.random.SeedSequence([self.cfg.seed, cid, PERSONAL_EVAL]).generate_state(1)[0])
        model = self.personal.personal_model(
            global_model, getattr(state, "personal", None),
            lambda: Fit(self.task, self._data(cid), self.cfg.train, seed, trainer=train_local))
        return {"personal": model}

    def commit(self, server_round: int, committed: dict, spent: dict, keep: dict) -> dict:
        """The round's commit ({client: fit token} each): `committed`'s pending states become
        current, `spent`'s take their privacy account only, `keep`'s stay pending (async,
        still in flight), every other pending state is dropped; the new states' refs."""
        return self.states.commit(server_round, committed, spent, keep)

    def stage(self, client_id: ClientId, message: Any) -> Any:
        """Answer one stage of secure aggregation for a hosted client (`fedray.privacy.secagg`)."""
        assert client_id in self.hosted, f"client {client_id} is not hosted on this actor"
        return self.secagg.answer(client_id, message)

    def _decode_broadcast(self, payloads: dict) -> tuple[dict, dict]:
        """The broadcast with encoded payloads decoded, each once on this actor; the
        decode figures for the round's metrics."""
        if self.downlink is None:
            return payloads, {}
        payloads, seconds, decodes = self.downlink.decode(payloads)
        return payloads, {"downlink_decode_s": seconds, "downlink_decodes": float(decodes)}

    def _attacks(self, cid: ClientId) -> bool:
        return self._attack is not None and cid in self.cfg.clients.attack.clients

    def _data(self, cid: ClientId, task: int = 0) -> Any:
        """The client's training data (its data-schedule task's view of its shard) on
        this actor's device, prepared once per task."""
        if cid not in self.shards:
            if cid in self.hosted:
                raise NotLoaded(cid)
            raise AssertionError(f"client {cid} is not hosted on this actor")
        cached_task, data = self._tensors.get(cid, (None, None))
        if data is None or cached_task != task:
            shard = self.shards[cid] if self.schedule is None else self.schedule.view(self.shards[cid], task)
            if self.schedule is not None and shard.num_rows == 0:
                raise ValueError(f"client {cid} has no examples of data.schedule task {task}")
            data = self.task.prepare(shard, self.device)
            if self._attacks(cid) and self._attack.data is not None:
                data = self._attack.data(data, self.cfg.clients.attack, self.info.num_classes)
            self._tensors[cid] = (task, data)
        return data

    def _activate(self, cid: ClientId, merges: tuple):
        """The travelling parameters of this client: its rank's adapter over a base
        that holds every merge so far (LoRA), or the whole model's."""
        if self.adapters is None:
            return self.spec
        self.merged.catch_up(self.model, self.layout, merges, fetch=ray.get)
        return self.adapters.activate(self.ranks.get(cid, self.cfg.model.peft.r))


def _evaluate_model(task, model: torch.nn.Module, data: Any) -> dict[str, float]:
    """The task's held-out metrics of `model`, in eval mode and without gradients; the
    model's mode is restored after (it trains next)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in task.evaluate(model, data, _EVAL_BATCH).items()}
    finally:
        model.train(was_training)


def _named(name: str, regularizer):
    """The term's regularizer, its exceptions raised as that component's bug."""
    return lambda model, generator: in_component(name, regularizer, model, generator)


def _sum(regularizers: list):
    """One regularizer adding up several (None if there are none)."""
    if not regularizers:
        return None
    if len(regularizers) == 1:
        return regularizers[0]
    return lambda model, generator: sum(r(model, generator) for r in regularizers)
