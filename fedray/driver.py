"""The driver's side of a run: the server actor's life, one round at a time, and the summary.

The rounds run in the server actor (`fedray.server.actor`); the driver creates it,
asks for one round at a time and prints a line per round, restarts it from the
newest checkpoint if it dies, and writes summary.json however the run stops,
claiming only rounds whose checkpoint is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from pathlib import Path
import dataclasses
from typing import Callable

from fedray.config.schema import RunConfig
from fedray.data.federated import FederatedDataset
from fedray.types import RoundResult


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A config checked and built by `fedray.launcher.prepare`: ready to run."""

    cfg: RunConfig
    dataset: FederatedDataset
    num_params: int


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


class Driver:
    """One run as the driver sees it: the live server actor, its restarts, where things run."""

    def __init__(self, prepared: PreparedRun, run_dir, console: Callable[[str], None], started: float):
        self.prepared, self.cfg = prepared, prepared.cfg
        self.run_dir, self.console, self.started = run_dir, console, started
        self.placement: dict = {}
        self.ranks = None
        """The foundation model's reserved placement group, if any."""
        self.server = None
        self.next_round, self.restarts = 1, 0
        self.last_round = self.cfg.server.rounds
        """The last round to run: `server.rounds`, or earlier when a privacy budget runs out."""
        self.stopped_by: str | None = None
        """`Ctrl-C` or `SIGTERM` once the user (or a scheduler) interrupted the run."""

    def reserve(self, cleanup: contextlib.ExitStack) -> None:
        """Fail fast on resources the cluster never has; reserve the foundation model's ranks."""
        import ray

        from fedray.cluster.placement import bundle_nodes, release, reserve_worker_group
        from fedray.cluster.resources import unplaceable_error

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
        """Create the server actor (from the newest checkpoint if `resume`) and wait for its clients."""
        import ray

        from fedray.cluster.placement import server_options
        from fedray.server.actor import Server

        cfg = self.cfg
        prefix = f"fedray/{run_key(self.run_dir)}/{self.restarts}"
        self.server = ray.remote(Server).options(
            name=f"{prefix}/server", **cfg.server.resources.as_ray_options(), **server_options(),
        ).remote(cfg, self.prepared.dataset, str(self.run_dir), prefix, resume, self.ranks)
        info = ray.get(self.server.start.remote())
        self.next_round, self.placement["server_node"] = info["next_round"], info["server_node"]
        self.last_round = info["last_round"]
        if info["next_round"] > 1:
            self.console(f"resuming after round {info['next_round'] - 1}")
        if self.last_round < cfg.server.rounds:
            self.console(f"fedray: the privacy budget (server.privacy.args.target_epsilon) allows {self.last_round} "
                         f"of server.rounds={cfg.server.rounds} rounds; the run stops after round {self.last_round}")
        self.console(
            f"{info['num_actors']} client actor(s) for {cfg.clients.num_clients} clients on "
            f"{info['num_nodes']} node(s) {info['devices']}; {info['num_params']:,} parameters "
            f"({time.perf_counter() - self.started:.1f} s)"
        )

    def run_rounds(self) -> str:
        """Ask the server for one round at a time; the run's status when they stop."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        cfg = self.cfg
        while self.next_round <= self.last_round:
            try:
                result, notes = ray.get(self.server.run_round.remote(self.next_round))
            except RayActorError as err:
                if self.restarts >= cfg.server.max_restarts:
                    self.stop(f"the server actor died and server.max_restarts={cfg.server.max_restarts} "
                              f"restarts are used up: {_first_line(err)}")
                    return "failed"
                self.restarts += 1
                self.console(f"fedray: the server actor died in round {self.next_round} ({_first_line(err)}); "
                             f"restart {self.restarts}/{cfg.server.max_restarts} from the newest checkpoint")
                self.start_server(resume=True)
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
        """Stop the actors and write summary.json, claiming only what is on disk."""
        from fedray.server.rundir import RunDirectory

        summary = _server_summary(self.server, status) if self.server is not None else None
        summary = summary_on_disk(self.run_dir, self.cfg, status, summary)
        summary.update(run_dir=str(self.run_dir), placement=self.placement,
                       wall_s=time.perf_counter() - self.started)
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
    from fedray.server.actor import summarize
    from fedray.server.checkpoint import checkpoint_round, latest_checkpoint, load_newest
    from fedray.server.rundir import RunDirectory

    checkpoints = RunDirectory(run_dir).checkpoints
    if summary is not None and (status == "completed" or not cfg.server.checkpoint_every):
        return summary
    newest = latest_checkpoint(checkpoints)
    if summary is not None and newest is not None and checkpoint_round(newest) == summary["rounds_completed"]:
        return summary
    loaded = load_newest(checkpoints)
    if loaded is None:
        return {"status": status, "rounds_completed": 0, "final_metrics": {}, "rounds_wall_s": 0.0, "sim_time_s": 0.0}
    return summarize(loaded.state, status)


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
