"""The driver's side of a run: the server actor's life, one round at a time, and the summary.

The rounds run in the server actor (`fedray.server.actor`); the driver creates it,
asks for one round at a time and prints a line per round, restarts it from the
newest checkpoint if it dies, and writes summary.json however the run stops,
claiming only rounds whose checkpoint is on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from fedray.config.schema import RunConfig
from fedray.data.plan import DataPlan
from fedray.types import RoundResult

if TYPE_CHECKING:
    from fedray.client.pool import WarmActors


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A config checked and built by `fedray.launcher.prepare`: ready to run."""

    cfg: RunConfig
    dataset: DataPlan
    """The data description: who holds which rows, not the rows (`fedray.data.plan`)."""
    num_params: int
    prepare_s: float = 0.0
    """Seconds spent building the data and checking the config."""


@dataclasses.dataclass
class StartUp:
    """Where a run's start-up went, for the console line that reports it."""

    data_s: float = 0.0
    ray_s: float = 0.0
    """Seconds `ray.init` took (0: Ray was already up in this process)."""
    ray_alongside: bool = False
    """Ray started while the data was built, so the two overlapped."""
    waited_s: float = 0.0
    """Seconds the run waited for Ray after its data was ready."""
    actors_s: float = 0.0
    """From creating the actors until the server and every client actor were ready."""
    num_warm: int = 0
    """Client actors taken over, warm, from the previous run of this process."""

    def describe(self, total_s: float) -> str:
        if self.ray_s == 0:
            ray = "Ray already up"
        elif self.ray_alongside:
            ray = f"Ray {self.ray_s:.1f} s alongside the data ({self.waited_s:.1f} s waited)"
        else:
            ray = f"Ray {self.ray_s:.1f} s"
        warm = f", {self.num_warm} warm" if self.num_warm else ""
        return f"start-up {total_s:.1f} s: data {self.data_s:.1f} s, {ray}, actors {self.actors_s:.1f} s{warm}"


def resource_problems(cfg: RunConfig) -> list[str]:
    """What the connected cluster can never provide for this run's actors."""
    from fedray.cluster.resources import check_cluster

    return check_cluster(cfg) if cfg.ray.check_resources else []


def format_round(result: RoundResult, rounds: int) -> str:
    parts = [
        f"round {result.server_round:>{len(str(rounds))}}/{rounds}",
        f"clients {result.clients_succeeded}/{result.clients_selected}",
        f"train_loss {result.train_loss:.4f}",
    ]
    if not math.isnan(result.eval_loss):
        parts += [f"eval_loss {result.eval_loss:.4f}", f"accuracy {result.eval_accuracy:.4f}"]
    if not math.isnan(result.eval_perplexity):
        parts.append(f"perplexity {result.eval_perplexity:.2f}")
    if not math.isnan(result.metrics.get("fed_clients", math.nan)):  # federated evaluation
        parts.append(f"clients' accuracy {result.metrics['fed_global_accuracy']:.4f} "
                     f"(worst 10% {result.metrics['fed_global_accuracy_worst10']:.4f})")
    if "dp_epsilon" in result.metrics:
        parts.append(f"epsilon {result.metrics['dp_epsilon']:.3g}")
    parts.append(f"{result.round_wall_s:.2f} s")
    parts.append(f"sim {result.sim_time_s:.1f} s")
    return " | ".join(parts)


def run_key(run_dir) -> str:
    """A name for a run's actors, unique per run directory, so concurrent runs on one
    cluster never collide: `<dir name>-<hash of its absolute path or URI>`."""
    text = str(run_dir)
    if "://" not in text:
        text = str(Path(text).resolve())
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text.rstrip('/').rsplit('/', 1)[-1]}-{digest}"


def with_state_dir(cfg: RunConfig, run_dir) -> RunConfig:
    """`cfg` with `clients.state_dir` resolved for this run (`fedray.client.store`)."""
    from fedray.client.store import resolve_state_dir

    where = resolve_state_dir(cfg.clients.state_dir, str(run_dir))
    return dataclasses.replace(cfg, clients=dataclasses.replace(cfg.clients, state_dir=where))


class Driver:
    """One run as the driver sees it: the live server actor, its restarts, where things run."""

    def __init__(self, prepared: PreparedRun, run_dir, console: Callable[[str], None], started: float,
                 warm: "WarmActors | None" = None, startup: StartUp | None = None, began: float | None = None):
        """`started`: when the run began (its `wall_s` counts from there); `began`: when the
        command began (start-up counts from there). `warm`: idle client actors of this
        process's previous runs, taken over where they match; a completed run leaves its
        own there."""
        cfg = with_state_dir(prepared.cfg, run_dir)
        self.prepared, self.cfg = dataclasses.replace(prepared, cfg=cfg), cfg
        self.run_dir, self.console, self.started = run_dir, console, started
        self.began = started if began is None else began
        self.warm = warm
        self.startup = startup if startup is not None else StartUp(data_s=prepared.prepare_s)
        self.placement: dict = {}
        self.ranks = None
        """The foundation model's reserved placement group, if any."""
        self.pool = None
        """The client actors (`fedray.client.pool.ClientPool`): created here, handed to the server."""
        self.server = None
        self.next_round, self.restarts = 1, 0
        self.last_round = self.cfg.server.rounds
        """The last round to run: `server.rounds`, or earlier when a privacy budget runs out."""
        self.stopped_by: str | None = None
        """`Ctrl-C` or `SIGTERM` once the user (or a scheduler) interrupted the run."""
        self.signals: list[int] = []
        """SIGTERMs received during the run (`sigterm_as_interrupt`): checked between rounds."""
        self.budget = None
        """`server.budget_mb`'s `fedray.server.budget.CommBudget`, once the server is up."""

    def reserve(self, cleanup: contextlib.ExitStack) -> None:
        """Fail fast on resources the cluster never has; reserve the foundation model's ranks."""
        import ray

        from fedray.cluster.placement import bundle_nodes, release, reserve_worker_group
        from fedray.cluster.resources import unplaceable_error

        if self.warm is not None:
            self.warm.evict(self.cfg)  # idle actors this run cannot use must not hold resources
        if self.cfg.clients.resources.memory_gb == "auto":
            from fedray.client.probe import resolve_auto_memory

            self.cfg, _ = resolve_auto_memory(self.cfg, self.prepared.dataset, self.console)
            self.prepared = dataclasses.replace(self.prepared, cfg=self.cfg)
        missing = resource_problems(self.cfg)
        if missing:
            raise unplaceable_error(missing, "")
        self.placement["driver_node"] = ray.get_runtime_context().get_node_id()
        foundation = self.cfg.server.foundation_model
        if foundation.model is not None:
            self.ranks = reserve_worker_group(foundation, f"fedray/{run_key(self.run_dir)}/foundation")
            cleanup.callback(release, self.ranks)
            self.placement["worker_nodes"] = bundle_nodes(self.ranks)
            self.console(f"foundation model: {foundation.num_workers} rank(s) {foundation.placement_strategy.value} "
                         f"on {len(set(self.placement['worker_nodes']))} node(s)")

    def start_server(self, resume: bool) -> None:
        """Create the client actors and the server actor (from the newest checkpoint if
        `resume`) together, and wait until all are ready: the server takes the pool over."""
        import ray

        from fedray.cluster.placement import server_options
        from fedray.cluster.remote import remote_class

        cfg = self.cfg
        began = time.perf_counter()
        prefix = f"fedray/{run_key(self.run_dir)}/{self.restarts}"
        if self.pool is None:
            for note in self.prepared.dataset.notes:  # what building the data cut, said once
                self.console(note)
            self.pool = self._client_pool(prefix)
            # the actors have their shard plans: keep no row numbers here, nor send them to the server
            self.prepared = dataclasses.replace(self.prepared, dataset=self.prepared.dataset.without_rows())
        if self.prepared.dataset.offsets is None:  # sites: only their actors know how many rows they hold
            dataset = self.prepared.dataset.with_sizes(self.pool.num_examples())
            self.prepared = dataclasses.replace(self.prepared, dataset=dataset)
        self.server = remote_class("fedray.server.actor:Server").options(
            name=f"{prefix}/server", **cfg.server.resources.as_ray_options(), **server_options(),
        ).remote(cfg, self.prepared.dataset, str(self.run_dir), prefix, resume, self.ranks, clients=self.pool)
        info = self._wait_ready()
        self.startup.actors_s = time.perf_counter() - began
        self.next_round, self.placement["server_node"] = info["next_round"], info["server_node"]
        self.last_round = info["last_round"]
        if info["next_round"] > 1:
            self.console(f"resuming after round {info['next_round'] - 1}")
        if cfg.server.budget_mb is not None:
            self._start_budget(info)
        if self.last_round < cfg.server.rounds:
            self.console(f"fedray: the privacy budget (server.privacy.args.target_epsilon) allows {self.last_round} "
                         f"of server.rounds={cfg.server.rounds} rounds; the run stops after round {self.last_round}")
        self.console(
            f"{info['num_actors']} client actor(s) for {cfg.clients.num_clients} clients on "
            f"{info['num_nodes']} node(s) {info['devices']}; {info['num_params']:,} parameters; "
            + self.startup.describe(time.perf_counter() - self.began)
        )

    def _wait_ready(self) -> dict:
        """The server's start-up report, once it and every client actor are ready: at most
        `ray.start_timeout_s` (actors the cluster cannot place yet would wait forever)."""
        import ray
        from ray.exceptions import GetTimeoutError

        from fedray.cluster.errors import ClusterError

        timeout = self.cfg.ray.start_timeout_s
        try:
            return ray.get(self.server.start.remote(), timeout=timeout)
        except GetTimeoutError:
            ray.kill(self.server)
            self.server = None
            waiting = self.pool.unplaced()
            if waiting:
                raise ClusterError(
                    f"the client actors were not placed within ray.start_timeout_s={timeout:g} s: they wait for "
                    f"{waiting} (all at once; other work holds part of it: see `ray status`)") from None
            raise ClusterError(f"the run's actors were not ready within ray.start_timeout_s={timeout:g} s "
                               "(the cluster may lack free resources: see `ray status`)") from None

    def _start_budget(self, info: dict) -> None:
        """The communication budget, counting the rounds a resumed run already did."""
        from fedray.server.budget import CommBudget

        done = info["round_bytes"]
        self.budget = CommBudget.start(self.cfg.server.budget_mb, self.cfg.server.clients_per_round,
                                       info["num_params"], sum(done), max(done, default=0))
        self.console(self.budget.describe_start(self.cfg.server.rounds, info["next_round"]))

    def _stop_for_budget(self, result: RoundResult) -> None:
        """The next round would overrun `server.budget_mb`: end here, this round checkpointed."""
        import ray

        self.budget.stopped = True
        every = self.cfg.server.checkpoint_every
        if every and result.server_round % every:
            ray.get(self.server.checkpoint.remote())
        self.console(f"fedray: stopping after round {result.server_round}: the next round (~"
                     f"{self.budget.round_bytes / 1e6:.3f} MB) would overrun server.budget_mb="
                     f"{self.cfg.server.budget_mb:g} ({self.budget.used_bytes / 1e6:.3f} MB used)")

    def _client_pool(self, prefix: str, data=None):
        """The client actors (warm ones taken over where they match), building their shards."""
        from fedray.client.pool import ClientPool
        from fedray.client.store import StateCodec
        import functools

        from fedray.server.serialize import decode, encode
        from fedray.server.state_types import StateTypes
        from fedray.lifecycle.continual.schedule import build_schedule
        from fedray.models.adapters import client_ranks

        cfg, dataset = self.cfg, self.prepared.dataset
        if cfg.federation.enabled:  # the clients are the sites': reach them now (exit 2 if one refuses)
            from fedray.sites.transport import SitesPool

            pool = SitesPool(cfg, os.path.join(str(self.run_dir), "audit.jsonl"))
            pool.describe()
            pool.shutdown()
            return pool
        ranks = None if cfg.model.peft is None else client_ranks(cfg.model.peft, dataset.sizes())
        # The public inputs of knowledge transfer come later, from the server's foundation
        # model (`ClientPool.share_public`): it may generate them.
        schedule = build_schedule(cfg.data.schedule, dataset.owner_names)
        idle = len(self.warm) if self.warm is not None else 0
        types = StateTypes.of(cfg)  # the client stores hold plug-ins' declared state classes too
        pool = ClientPool(cfg, dataset, prefix, None, ranks, warm=self.warm, data=data, schedule=schedule,
                          codec=StateCodec(functools.partial(encode, types=types),
                                           functools.partial(decode, types=types)))
        self.startup.num_warm = idle - (len(self.warm) if self.warm is not None else 0)
        return pool

    def restart_server(self) -> None:
        """A new server from the newest checkpoint, with new client actors building their
        shards from the plans already in the object store (a LoRA client's base must match
        the checkpoint's)."""
        self.restarts += 1
        data = self.pool.data
        self.pool.shutdown()
        self.pool = self._client_pool(f"fedray/{run_key(self.run_dir)}/{self.restarts}", data)
        self.start_server(resume=True)

    def run_rounds(self) -> str:
        """Ask the server for one round at a time; the run's status when they stop."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        cfg = self.cfg
        while self.next_round <= self.last_round:
            if self.signals:  # a SIGTERM whose exception something swallowed: stop here all the same
                raise KeyboardInterrupt("SIGTERM")  # (the launcher and the CLI read the signal's record)
            try:
                result, notes = ray.get(self.server.run_round.remote(self.next_round))
            except RayActorError as err:
                if self.restarts >= cfg.server.max_restarts:
                    self.stop(f"the server actor died and server.max_restarts={cfg.server.max_restarts} "
                              f"restarts are used up: {_first_line(err)}")
                    return "failed"
                self.console(f"fedray: the server actor died in round {self.next_round} ({_first_line(err)}); "
                             f"restart {self.restarts + 1}/{cfg.server.max_restarts} from the newest checkpoint")
                self.restart_server()
                continue
            except RayTaskError as err:
                if isinstance(err.cause, OSError):
                    self.stop(f"round {self.next_round}: the server could not write the run's files: {err.cause}")
                    return "failed"
                self.bug(err)  # in fedray or in user code: not a failed client
                return "failed"
            for note in notes:
                self.console(f"  warning: {note}")
            if result is None:
                self.console(f"fedray: stopping: {notes[-1]}")
                return "failed"
            self.console(format_round(result, cfg.server.rounds))
            self.next_round += 1
            if self.budget is not None and not self.budget.record(result.bytes_up, result.bytes_down) \
                    and self.next_round <= self.last_round:
                self._stop_for_budget(result)
                break
        return "completed"

    def bug(self, err: BaseException) -> None:
        """Stop for an exception nobody counted as a client failure: its whole traceback
        (across the Ray actors it went through) goes to log.txt."""
        from fedray.server.rundir import RunDirectory

        RunDirectory(self.run_dir).log(f"round {self.next_round} stopped by an error. "
                                       f"Traceback (most recent call last, across Ray actors):\n{err}")
        self.console(f"fedray: stopping: round {self.next_round}: {_root_cause(err)} "
                     "(the traceback is in log.txt)")

    def stop(self, reason: str) -> None:
        """Say why the run stops, on the console and in log.txt."""
        from fedray.server.rundir import RunDirectory

        self.console(f"fedray: stopping: {reason}")
        try:
            RunDirectory(self.run_dir).log(f"stopping: {reason}")
        except OSError as err:
            self.console(f"fedray: could not write log.txt either: {err}")

    def finish(self, status: str) -> dict:
        """Stop the actors (a completed run's client actors may stay warm for the next run)
        and write summary.json, claiming only what is on disk."""
        from fedray.server.rundir import RunDirectory

        summary = _server_summary(self.server, status) if self.server is not None else None
        if self.pool is not None:
            if status == "completed" and self.warm is not None:
                self.warm.keep(self.pool)
            else:
                self.pool.shutdown()
        summary = summary_on_disk(self.run_dir, self.cfg, status, summary)
        summary.update(run_dir=str(self.run_dir), placement=self.placement,
                       wall_s=time.perf_counter() - self.started)
        if self.budget is not None:
            summary["communication"] = self.budget.summary()
            self.console(f"communication: {self.budget.used_bytes / 1e6:.3f} MB of server.budget_mb="
                         f"{self.cfg.server.budget_mb:g}")
        try:
            RunDirectory(self.run_dir).write_summary(summary)
        except OSError as err:
            self.console(f"fedray: could not write summary.json: {err}")
        if self.stopped_by:
            self.console(f"fedray: stopped by {self.stopped_by} after round {summary['rounds_completed']}; "
                         f"continue with `fedray run --resume {self.run_dir}`")
        return summary


def summary_on_disk(run_dir, cfg: RunConfig, status: str, summary: dict | None) -> dict:
    """The server's summary, unless it claims rounds whose checkpoint is not on disk (a failed
    write, an interrupt between checkpoints) or the server is gone: then the newest checkpoint's."""
    from fedray.server.summary import summarize
    from fedray.server.checkpoint import checkpoint_round, latest_checkpoint, load_newest
    from fedray.server.rundir import RunDirectory
    from fedray.server.state_checks import RunShape

    checkpoints = RunDirectory(run_dir).checkpoints
    if summary is not None and (status == "completed" or not cfg.server.checkpoint_every):
        return summary
    newest = latest_checkpoint(checkpoints)
    if summary is not None and newest is not None and checkpoint_round(newest) == summary["rounds_completed"]:
        return summary
    loaded = load_newest(checkpoints, shape=RunShape.of(cfg))
    if loaded is None:
        summary = {"status": status, "rounds_completed": 0, "final_metrics": {}, "rounds_wall_s": 0.0,
                   "sim_time_s": 0.0}
    else:
        summary = summarize(loaded.state, status)
    trim_metrics(run_dir, summary["rounds_completed"])
    return summary


def trim_metrics(run_dir, rounds_completed: int) -> None:
    """metrics.parquet keeps only the rounds summary.json claims: rows of rounds no checkpoint
    holds (a failed write, an interrupt between checkpoints) run again on --resume, so they
    move to log.txt instead of standing beside a summary that does not count them."""
    import pyarrow.compute as pc

    from fedray.server.rundir import RunDirectory, read_parquet, write_parquet

    directory = RunDirectory(run_dir)
    try:
        table = read_parquet(directory.metrics_path)
    except (OSError, ValueError):
        return  # none written yet (or unreadable: nothing to keep consistent with)
    if "round" not in table.column_names or table.num_rows == 0:
        return
    beyond = pc.greater(table["round"], rounds_completed)
    if not pc.any(beyond).as_py():
        return
    dropped = table.filter(beyond).to_pylist()
    directory.log(f"metrics of round(s) {[row['round'] for row in dropped]} moved here from metrics.parquet: "
                  f"no checkpoint holds them (they run again on --resume): {dropped}")
    write_parquet(directory.metrics_path, table.filter(pc.invert(beyond)))


def _server_summary(server, status: str) -> dict | None:
    """The server's summary once its round in progress is done (it also stops the clients);
    None if the actor is gone or could not write it."""
    import ray
    from ray.exceptions import RayError

    try:
        summary = ray.get(server.finish.remote(status))
    except RayError:
        summary = None
    ray.kill(server)
    return summary


def _root_cause(err: BaseException) -> str:
    """`Type: message` of the exception at the bottom of a chain of remote task errors."""
    from ray.exceptions import RayTaskError

    while isinstance(err, RayTaskError) and getattr(err, "cause", None) is not None:
        err = err.cause
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
