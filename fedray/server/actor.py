"""The server Ray actor: owns the global model and the client actors, runs rounds."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import ray

from fedray.client.pool import ClientPool, actor_index, placement_columns
from fedray.compress import build_codecs
from fedray.compress.downlink import BroadcastEncoder
from fedray.compress.rate import upload_budgets, wants_budget
from fedray.config.schema import RunConfig, ServerMode
from fedray.data.federated import FederatedDataset
from fedray.data.split import num_held_out
from fedray.foundation.group import FoundationError
from fedray.foundation.term import knowledge_transfer
from fedray.foundation.transfer import Distiller
from fedray.hetero.simulation import Simulation, build_simulation
from fedray.lifecycle.continual import build_schedule
from fedray.lifecycle.continual.metrics import TaskEvaluator
from fedray.lifecycle.watermark import ensure_keys, watermark_terms
from fedray.models.adapters import FoldedMerges, client_ranks, lora_layout
from fedray.models.build import build_model
from fedray.models.device import assigned_device, limit_threads
from fedray.models.flat import get_flat, set_flat
from fedray.personalization import personalize, shared_spec
from fedray.models.tasks import build_task
from fedray.privacy import build_mechanism, build_secure_params, with_privacy
from fedray.privacy.dpsgd import epsilon_column
from fedray.privacy.secagg.stages import SecureStages
from fedray.selection import SELECTORS, ClientProfiles, clients_table
from fedray.server.buffered import run_buffered_round
from fedray.server.checkpoint import (CheckpointError, checkpoint_round, latest_checkpoint, load_newest, prune_tags,
                                      save_checkpoint)
from fedray.server.state_checks import RunShape
from fedray.server.context import RoundContext
from fedray.server.loop import run_attempts, run_round
from fedray.server.records import RunRecords
from fedray.server.rundir import Location, RunDirectory
from fedray.server.state import ServerState
from fedray.server.summary import summarize  # noqa: F401  (re-exported)
from fedray.strategy.algorithm import build_algorithm
from fedray.strategy.lora import build_exchange
from fedray.strategy.staleness import STALENESS
from fedray.transport.ray import RayTransport
from fedray.types import RoundResult

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

logger = logging.getLogger("fedray.server")

_EVAL_BATCH = 1024

ROUNDS = {ServerMode["sync"]: run_round, ServerMode["async"]: run_buffered_round}
"""How one round (one model update) runs, by `server.mode`."""


class Server:
    """Run as a Ray actor (`ray.remote(Server)`); the driver calls `run_round` per round.

    Components (strategy, selector, exchange) are built here once; the client pool
    comes from the driver; everything that changes between rounds lives in
    `self.state`, which is what a checkpoint holds. `dataset` needs no training rows
    (the clients have them): only the offsets, the test split and the public set. With `resume`, the state comes from the run directory's
    newest complete checkpoint (and a fresh start if it has none).
    """

    def __init__(self, cfg: RunConfig, dataset: FederatedDataset, run_dir: str, name_prefix: str,
                 resume: bool = False, foundation_group: "PlacementGroup | None" = None, *,
                 clients: ClientPool):
        limit_threads(max(1.0, cfg.server.resources.num_cpus))
        self.cfg = cfg
        self.placement: dict = {}
        """clients.parquet's placement columns, known once the client actors are up."""
        self._text_columns: dict = {}
        """clients.parquet's text columns, converted to Arrow once (`clients_table`)."""
        self.run_dir = RunDirectory(run_dir)
        self.device = assigned_device()
        self.task = build_task(dataset.info, cfg)
        self.model = build_model(cfg.model, dataset.info, cfg.seed)
        personalize(cfg, self.model)  # the server's own, untouched copy of a personal LoRA adapter
        self.model = self.model.to(self.device)
        self.spec = shared_spec(cfg, self.model)  # personal tensors never travel: the server keeps its own
        on_server = cfg.server.evaluation.on_server  # else the server loads no rows at all
        self.test_data = self.task.prepare(dataset.test, self.device) if on_server else None
        num_examples = np.diff(dataset.offsets)
        if not getattr(dataset, "sites", ()):  # the clients hold out their evaluation rows (site sizes already count them out)
            num_examples = num_examples - num_held_out(num_examples, cfg.data.client_test_fraction)
        simulation = build_simulation(cfg, num_examples, self.spec.num_bytes)
        peft = cfg.model.peft
        ranks = None if peft is None else client_ranks(peft, num_examples)
        self.layout = None if peft is None else lora_layout(self.spec, peft)
        self.merged = FoldedMerges()
        self.shape = RunShape.of(cfg, self.spec.num_params)
        loaded = load_newest(self.run_dir.checkpoints, self._note_corrupt, self.shape) if resume else None
        saved = loaded.state if loaded is not None else None
        self.distiller = self._start_foundation(dataset, name_prefix, foundation_group, saved)
        extra = ((knowledge_transfer(cfg.server.distill, dataset.info.task, self.distiller),)
                 if cfg.server.distill.enabled else ())
        codecs = build_codecs(cfg)
        self.algorithm = with_privacy(build_algorithm(cfg, extra + watermark_terms(cfg), codecs.uplink), cfg)
        schedule = build_schedule(cfg.data.schedule, dataset.owner_names)
        self.tasks = None if schedule is None or not on_server else \
            TaskEvaluator(schedule, self.task, dataset.test, self.device)
        exchange = build_exchange(cfg, self.algorithm, self.spec.num_params, self.layout, ranks,
                                  lambda cid: actor_index(cid, cfg))
        selector = SELECTORS.build(cfg.server.selection.name, cfg.server.selection)
        downlink = None if codecs.downlink is None else BroadcastEncoder(codecs.downlink, cfg.seed)
        self.ctx = RoundContext(cfg, selector, simulation, exchange, STALENESS.build(cfg.server.staleness, cfg.server),
                                np.random.default_rng([cfg.seed, 0x5E1EC7]), self.evaluate,
                                downlink=downlink, instruct=_upload_budgets(cfg, simulation))
        self.ctx.eval_columns = tuple(getattr(self.task, "eval_columns", ())) if on_server else ()
        if schedule is not None:
            self.ctx.task_of = schedule.task_of
            self.ctx.eval_columns = self.tasks.columns if on_server else ()
        elif hasattr(self.task, "columns") and on_server:  # generation scores per task (instruction data)
            self.ctx.eval_columns = self.task.columns(self.test_data)
        self.state = saved if saved is not None else self._initial_state(exchange, selector)
        self.ctx.rng.bit_generator.state = self.state.rng_state
        if self.state.profiles is None:
            self.state.profiles = initial_profiles(simulation, num_examples)
        self.records = RunRecords(cfg, self.run_dir, self.spec, self._evaluate_params)
        if self.records.active:  # the ledger and contribution evaluation see every round
            self.ctx.observer = self.records
            self.records.restore(self.state)
        if self.state.metrics:  # drop rows of rounds after the checkpoint: they run again
            self.run_dir.write_metrics(self.state.metrics)
            self.run_dir.write_evaluation(self.state.evaluations)
            self.write_clients()
        ensure_keys(cfg.server.watermark, self.spec, dataset.info)  # the owners' keys, before they train
        self.pool = clients
        """Created by the driver (so the actors start alongside this one), stopped by it."""
        self.transport = clients.transport() if hasattr(clients, "transport") else RayTransport(self.pool)
        """How the rounds reach the clients."""
        if self.distiller is not None:  # made or loaded here, so the actors get it now
            self.pool.share_public(self.distiller.public_inputs)
        mechanism, secure = build_mechanism(cfg), build_secure_params(cfg)
        self.ctx.last_round = 0 if mechanism is None else mechanism.rounds_allowed
        if secure is not None:
            self.ctx.stages = SecureStages(secure, self.transport.stage, self.transport.put, exchange.aggregator,
                                           cfg.server.round_timeout_s)

    def _note_corrupt(self, err: CheckpointError) -> None:
        """A restarted server skips a checkpoint that does not load (the driver's resume has
        already set such files aside; this is a file damaged since)."""
        note = f"{err}; continuing from an older checkpoint"
        logger.warning(note)
        self.run_dir.log(note)

    def _note_corrupt(self, err: CheckpointError) -> None:
        """A restarted server skips a checkpoint that does not load (the driver's resume has
        already set such files aside; this is a file damaged since)."""
        note = f"{err}; continuing from an older checkpoint"
        logger.warning(note)
        self.run_dir.log(note)

    def _initial_state(self, exchange, selector) -> ServerState:
        params = get_flat(self.model, self.spec)
        return ServerState(
            server_round=0,
            params=params,
            transform_state=self.algorithm.server_transforms.init(params),
            selector_state=selector.init(self.cfg.clients.num_clients),
            rng_state=self.ctx.rng.bit_generator.state,
            aggregator_state=exchange.aggregator.init(),
            term_states=tuple(t.init_server(params) for t in self.algorithm.terms),
        )

    def _start_foundation(self, dataset: FederatedDataset, name_prefix: str, group, saved: ServerState | None):
        """The ZeRO-sharded foundation model in its reserved placement group: reloaded from
        the checkpoint's DeepSpeed shards (and its generator) when resuming, else warmed up
        on the public set; a generated public set is read from the run's cache or sampled."""
        if self.cfg.server.foundation_model.model is None:
            return None
        distiller = Distiller.for_run(self.cfg, dataset, name_prefix, group, self.run_dir.location / "public")
        tag = f"round_{saved.server_round:06d}" if saved is not None else None
        if saved is not None and (self._foundation_dir() / tag).exists():
            distiller.load(str(self._foundation_dir()), tag)
            if saved.distiller_rng is not None:
                distiller.rng.bit_generator.state = saved.distiller_rng
        else:
            loss = distiller.pretrain(self.cfg.server.distill.pretrain_steps)
            if self.cfg.server.distill.pretrain_steps:
                self.run_dir.log(f"foundation model warmed up on the public set: loss {loss:.4f}")
        distiller.begin_round(1 + (saved.server_round if saved is not None else 0))  # a generated set
        return distiller

    def _foundation_dir(self) -> Location:
        """DeepSpeed writes its shards itself, so they need a filesystem path (local or
        mounted on every node), not an object-store URI."""
        where = self.run_dir.checkpoints / "foundation"
        if not where.is_local:
            raise ValueError(f"server.foundation_model checkpoints need a filesystem output_dir, got {where}")
        return where

    # ---- called by the driver ------------------------------------------------
    def start(self) -> dict:
        """Wait for the client actors, write clients.parquet; where they run, which round is next."""
        started = time.perf_counter()
        actors = self.pool.describe()
        self.placement = placement_columns(actors, self.cfg.clients.num_clients)
        self.write_clients()
        return {
            "num_actors": len(actors),
            "num_nodes": len({a["node_id"] for a in actors}),
            "devices": sorted({a["device"] for a in actors}),
            "num_params": self.spec.num_params,
            "server_node": ray.get_runtime_context().get_node_id(),
            "start_s": time.perf_counter() - started,
            "next_round": self.state.server_round + 1,
            "round_bytes": [r["bytes_up"] + r["bytes_down"] for r in self.state.metrics],
            "last_round": self.ctx.final_round,
        }

    def run_round(self, server_round: int) -> tuple[RoundResult | None, list[str]]:
        """Run a round, retrying it (new selection) while too few clients succeed.
        Returns (None, notes) if every attempt fell short; the state is then unchanged
        apart from the generator and selector, and the last checkpoint stands."""
        assert server_round == self.state.server_round + 1, "rounds must run in order"
        notes: list[str] = []
        result = None
        try:
            if self.distiller is not None:
                self.distiller.begin_round(server_round)  # refreshes a generated public set when due
            result, notes = run_attempts(ROUNDS[self.cfg.server.mode], self.ctx, self.algorithm, self.state,
                                         self.transport, server_round)
            if result is None:
                notes[-1] += f"; {self._what_is_kept()}"
        except FoundationError as err:
            self.distiller = None  # its ranks are gone; nothing more to ask of them
            notes.append(f"round {server_round}: {err}; {self._what_is_kept()}")
        for note in notes:
            logger.warning(note)
            self.run_dir.log(note)
        self.state.rng_state = self.ctx.rng.bit_generator.state
        if self.distiller is not None:
            self.state.distiller_rng = self.distiller.rng.bit_generator.state
        if result is None:
            return None, notes
        self.state.metrics.append(result.as_row())
        self.run_dir.write_metrics(self.state.metrics)
        self.run_dir.write_evaluation(self.state.evaluations)
        self.write_clients()
        every = self.cfg.server.checkpoint_every
        if every and (server_round % every == 0 or server_round == self.ctx.final_round):
            self.checkpoint()
        return result, notes

    def _what_is_kept(self) -> str:
        """What a stopped run leaves to resume from: its newest checkpoint, if it has one."""
        try:
            newest = latest_checkpoint(self.run_dir.checkpoints)
        except CheckpointError:  # only old pickle files: nothing this run can resume from
            newest = None
        if newest is None:
            return "no checkpoint has been written yet (a resume starts again from round 1 with --fresh)"
        return f"the newest checkpoint (after round {checkpoint_round(newest)}) is intact"

    def checkpoint(self) -> Location:
        """The server state; with a foundation model, first its DeepSpeed shards under
        checkpoints/foundation/round_NNNNNN (so a complete server checkpoint always has them)."""
        if self.distiller is not None:
            where = self._foundation_dir()
            self.distiller.save(str(where), f"round_{self.state.server_round:06d}")
            prune_tags(where, self.cfg.server.keep_checkpoints)
        return save_checkpoint(self.run_dir.checkpoints, self.state, self.cfg.server.keep_checkpoints,
                               self.shape.types)

    def write_clients(self) -> None:
        """clients.parquet: the profiles, joined with the simulated hardware and placement."""
        extra = [self.ctx.simulation.devices.columns()] + ([self.placement] if self.placement else [])
        extra.append(self.records.client_columns(self.state))
        if self.cfg.train.dp is not None:
            extra.append(epsilon_column(self.state.client_refs, self.cfg.clients.num_clients))
        self.run_dir.write_clients(clients_table(self.state.profiles, *extra, cache=self._text_columns))
    def finish(self, status: str = "completed") -> dict:
        """Write summary.json and stop the foundation model's ranks (the driver stops the
        client actors, or keeps them warm for its next run)."""
        summary = summarize(self.state, status)
        self.run_dir.write_summary(summary)
        if self.distiller is not None:
            self.distiller.shutdown()
        return summary

    # ---- used by the round ---------------------------------------------------
    def evaluate(self, state: ServerState) -> dict[str, float]:
        """Held-out metrics of the global model in `state` (`loss`, and `accuracy` or
        `perplexity` as the task defines)."""
        if state.merges:
            self.merged.catch_up(self.model, self.layout, state.merges)
        set_flat(self.model, self.spec, state.params)
        self.model.eval()
        metrics = self.task.evaluate(self.model, self.test_data, _EVAL_BATCH)
        if self.tasks is not None:  # continual learning: every task's accuracy, forgetting
            metrics.update(self.tasks.evaluate(self.model, state.server_round, state.metrics))
        return metrics

    def _evaluate_params(self, params: np.ndarray) -> dict[str, float]:
        """Held-out metrics of the global model with `params` (contribution evaluation's sub-models)."""
        return self.evaluate(dataclasses.replace(self.state, params=params))


def _upload_budgets(cfg: RunConfig, simulation: Simulation):
    """`rate: auto`'s per-client upload budgets from the simulated devices (else None)."""
    if not wants_budget(cfg):
        return None
    devices = simulation.devices
    return upload_budgets(cfg, devices.down_kbps, devices.up_kbps, simulation.expected_compute_s())


def initial_profiles(simulation: Simulation, num_examples: np.ndarray) -> ClientProfiles:
    """What the server knows before any round: example counts and device types (reported
    at registration) and the durations the devices imply."""
    return ClientProfiles.create(num_examples, simulation.expected_durations(),
                                 simulation.expected_compute_s(), simulation.devices.client_type)
