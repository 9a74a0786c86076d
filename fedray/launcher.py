"""The driver: check and build everything, start (or join) Ray, drive the server actor.

Everything that can be wrong with a config is found here before Ray starts and
reported at once as a ConfigError. The rounds themselves run in the server
actor; the driver asks for one round at a time, prints a line per round, and
leaves the run directory consistent however it stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from fedray.config.errors import ConfigError
from fedray.config.schema import RunConfig
from fedray.data.federated import FederatedDataset, build_federated_dataset
from fedray.types import RoundResult


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    cfg: RunConfig
    dataset: FederatedDataset
    num_params: int


def prepare(cfg: RunConfig, source: str | None = None) -> PreparedRun:
    """Build the data and check every named component; all problems in one ConfigError."""
    import torch

    from fedray.client.attacks import ATTACKS
    from fedray.hetero.availability import AVAILABILITY, build_availability
    from fedray.hetero.devices import DEVICE_SOURCES, build_devices
    from fedray.data.tokenize import TOKENIZERS
    from fedray.models.build import MODELS
    from fedray.selection import SELECTORS
    from fedray.strategy.presets import STRATEGIES
    from fedray.strategy.staleness import STALENESS

    problems: list[str] = []
    for key, registry, name in (
        ("server.strategy.name", STRATEGIES, cfg.server.strategy.name),
        ("server.selection.name", SELECTORS, cfg.server.selection.name),
        ("model.name", MODELS, cfg.model.name),
        ("clients.attack.name", ATTACKS, cfg.clients.attack.name),
        ("server.staleness", STALENESS, cfg.server.staleness),
        ("clients.profiles.source", DEVICE_SOURCES, cfg.clients.profiles.source),
        ("clients.availability.model", AVAILABILITY, cfg.clients.availability.model),
        ("data.tokenizer", TOKENIZERS, cfg.data.tokenizer),
    ):
        if name is None or name.endswith((".csv", ".parquet")):
            continue
        try:
            registry.get(name)
        except ValueError as err:
            problems.append(f"{key}: {err}")
    dataset = None
    if not problems:
        try:
            tokenizer = TOKENIZERS.build(cfg.data.tokenizer, cfg.model)
            held_out = cfg.server.foundation_model.model is not None and not cfg.server.distill.public.generated
            public = cfg.server.distill.public_size if held_out else 0
            dataset = build_federated_dataset(cfg.data, cfg.clients.num_clients, cfg.seed, tokenizer, public)
        except (ValueError, OSError) as err:
            problems.append(f"data: {err}")
    num_params = 0
    if dataset is not None and not problems:
        try:
            with torch.device("meta"):
                model = MODELS.build(cfg.model.name, cfg.model, dataset.info)
            num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            check_adapters(cfg, model, dataset)
        except (ValueError, TypeError, RuntimeError) as err:
            problems.append(f"model: {err}")
        if cfg.server.foundation_model.model is not None and not problems:
            problems += foundation_problems(cfg, dataset, model)
    for key, build, section in (("clients.profiles.source", build_devices, cfg.clients.profiles),
                                ("clients.availability.model", build_availability, cfg.clients.availability)):
        if not any(p.startswith(key) for p in problems):
            try:  # reads trace files: a bad one is a config error, found before Ray starts
                build(section, cfg.clients.num_clients, cfg.seed)
            except ValueError as err:
                problems.append(f"{key}: {err}")
    if problems:
        raise ConfigError(problems, source)
    return PreparedRun(cfg, dataset, num_params)


def check_adapters(cfg: RunConfig, model, dataset: FederatedDataset) -> None:
    """Build the LoRA aggregation once (on the dry model) so its errors surface now."""
    import numpy as np

    from fedray.models.adapters import client_ranks, lora_layout
    from fedray.models.flat import param_spec
    from fedray.strategy.lora import build_exchange

    if cfg.model.peft is None:
        return
    spec = param_spec(model)
    ranks = client_ranks(cfg.model.peft, np.diff(dataset.offsets))
    build_exchange(cfg, spec.num_params, lora_layout(spec, cfg.model.peft), ranks, lambda cid: 0)


def foundation_problems(cfg: RunConfig, dataset: FederatedDataset, client_model) -> list[str]:
    """Knowledge transfer needs one output space and a usable public set (see
    `fedray.foundation.checks`)."""
    from fedray.foundation.checks import foundation_problems as problems

    return problems(cfg, dataset, client_model)


@contextlib.contextmanager
def ray_session(cfg: RunConfig) -> Iterator[None]:
    """Join the Ray instance already initialised in this process, or connect/start one.

    `ray.address: null` starts a private local instance, except inside a Ray job
    (RAY_ADDRESS set by `ray job submit`), where it joins the job's cluster.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict = {"address": address, "include_dashboard": False, "log_to_driver": True}
    if address == "local":
        kwargs.update(num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus)
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


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
    parts.append(f"{result.round_wall_s:.2f} s")
    parts.append(f"sim {result.sim_time_s:.1f} s")
    return " | ".join(parts)


def run(
    prepared: PreparedRun,
    console: Callable[[str], None] = print,
    resume: str | None = None,
) -> dict:
    """Run every round; returns summary.json's content (plus `run_dir`).

    With `resume`, continue the run in that directory from its newest complete
    checkpoint. If the server actor dies, it is restarted from the newest
    checkpoint up to `server.max_restarts` times.
    """
    import ray
    from ray.exceptions import RayActorError

    from fedray.cluster.placement import bundle_nodes, release, reserve_worker_group
    from fedray.cluster.resources import unplaceable_error
    from fedray.server.rundir import Location, RunDirectory, unique_run_dir

    cfg = prepared.cfg
    started = time.perf_counter()
    run_dir = Location.parse(resume) if resume else unique_run_dir(cfg.output_dir, cfg.name)
    run_dir.mkdir()
    console(f"fedray: run '{cfg.name}' -> {run_dir}")

    with ray_session(cfg), contextlib.ExitStack() as cleanup:
        missing = resource_problems(cfg)
        if missing:
            raise unplaceable_error(missing, "")
        placement: dict = {"driver_node": ray.get_runtime_context().get_node_id()}
        ranks = None
        if cfg.server.foundation_model.model is not None:
            foundation = cfg.server.foundation_model
            ranks = reserve_worker_group(foundation, f"fedray/{run_key(run_dir)}/foundation")
            cleanup.callback(release, ranks)
            placement["worker_nodes"] = bundle_nodes(ranks)
            console(f"foundation model: {foundation.num_workers} rank(s) {foundation.placement_strategy.value} "
                    f"on {len(set(placement['worker_nodes']))} node(s)")
        server, info = _start_server(prepared, run_dir, bool(resume), 0, console, started, ranks)
        next_round, placement["server_node"] = info["next_round"], info["server_node"]
        status, restarts = "interrupted", 0
        try:
            while next_round <= cfg.server.rounds:
                try:
                    result, notes = ray.get(server.run_round.remote(next_round))
                except RayActorError as err:
                    if restarts >= cfg.server.max_restarts:
                        console(f"fedray: the server actor died and server.max_restarts="
                                f"{cfg.server.max_restarts} restarts are used up: {_first_line(err)}")
                        status = "failed"
                        break
                    restarts += 1
                    console(f"fedray: the server actor died in round {next_round} ({_first_line(err)}); "
                            f"restart {restarts}/{cfg.server.max_restarts} from the newest checkpoint")
                    server, info = _start_server(prepared, run_dir, True, restarts, console, started, ranks)
                    next_round, placement["server_node"] = info["next_round"], info["server_node"]
                    continue
                for note in notes:
                    console(f"  warning: {note}")
                if result is None:
                    console(f"fedray: stopping: {notes[-1]}")
                    status = "failed"
                    break
                console(format_round(result, cfg.server.rounds))
                next_round += 1
            else:
                status = "completed"
        finally:
            summary = _finish(server, run_dir, status)
    summary["run_dir"] = str(run_dir)
    summary["placement"] = placement
    summary["wall_s"] = time.perf_counter() - started
    RunDirectory(run_dir).write_summary(summary)
    return summary


def run_key(run_dir) -> str:
    """A name for a run's actors, unique per run directory, so concurrent runs on one
    cluster never collide: `<dir name>-<hash of its absolute path or URI>`."""
    text = str(run_dir)
    if "://" not in text:
        text = str(Path(text).resolve())
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text.rstrip('/').rsplit('/', 1)[-1]}-{digest}"


def _start_server(prepared: PreparedRun, run_dir, resume: bool, restarts: int,
                  console: Callable[[str], None], started: float, ranks=None):
    """Create the server actor (resuming from the newest checkpoint if asked); (handle, its start info)."""
    import ray

    from fedray.cluster.placement import server_options
    from fedray.server.actor import Server

    cfg = prepared.cfg
    prefix = f"fedray/{run_key(run_dir)}/{restarts}"
    server = ray.remote(Server).options(
        name=f"{prefix}/server", **cfg.server.resources.as_ray_options(), **server_options(),
    ).remote(cfg, prepared.dataset, str(run_dir), prefix, resume, ranks)
    info = ray.get(server.start.remote())
    if info["next_round"] > 1:
        console(f"resuming after round {info['next_round'] - 1}")
    console(
        f"{info['num_actors']} client actor(s) for {cfg.clients.num_clients} clients on "
        f"{info['num_nodes']} node(s) {info['devices']}; {info['num_params']:,} parameters "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return server, info


def _finish(server, run_dir, status: str) -> dict:
    """Summary from the server; if it is gone, from the newest checkpoint on disk."""
    import ray
    from ray.exceptions import RayActorError

    from fedray.server.actor import summarize
    from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
    from fedray.server.rundir import RunDirectory

    try:
        summary = ray.get(server.finish.remote(status))
        ray.kill(server)
        return summary
    except RayActorError:
        path = latest_checkpoint(RunDirectory(run_dir).checkpoints)
        if path is None:
            return {"status": status, "rounds_completed": 0, "final_metrics": {}}
        return summarize(load_checkpoint(path), status)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
