"""The driver: check and build everything, start (or join) Ray, drive the server actor.

Everything that can be wrong with a config is found here before Ray starts and
reported at once as a ConfigError. The rounds themselves run in the server
actor; the driver asks for one round at a time, prints a line per round, and
leaves the run directory consistent however it stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

    from fedray.data.tokenize import TOKENIZERS
    from fedray.models.build import MODELS
    from fedray.selection import SELECTORS
    from fedray.strategy.presets import STRATEGIES

    problems: list[str] = []
    for key, registry, name in (
        ("server.strategy.name", STRATEGIES, cfg.server.strategy.name),
        ("server.selection.name", SELECTORS, cfg.server.selection.name),
        ("model.name", MODELS, cfg.model.name),
        ("data.tokenizer", TOKENIZERS, cfg.data.tokenizer),
    ):
        try:
            registry.get(name)
        except ValueError as err:
            problems.append(f"{key}: {err}")
    dataset = None
    if not problems:
        try:
            tokenizer = TOKENIZERS.build(cfg.data.tokenizer, cfg.model)
            dataset = build_federated_dataset(cfg.data, cfg.clients.num_clients, cfg.seed, tokenizer)
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
    from fedray.cluster.resources import actor_demand, check_cluster

    client = actor_demand(cfg.clients.resources.as_ray_options())
    demands = [("server actor", actor_demand(cfg.server.resources.as_ray_options()))]
    demands += [(f"client actor {i}", client) for i in range(cfg.clients.num_actors)]
    return check_cluster(demands)


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
    return " | ".join(parts)


def run(
    prepared: PreparedRun,
    console: Callable[[str], None] = print,
    resume: str | None = None,
) -> dict:
    """Run every round; returns summary.json's content (plus `run_dir`)."""
    import ray

    from fedray.server.actor import Server
    from fedray.server.rundir import RunDirectory, unique_run_dir

    cfg = prepared.cfg
    started = time.perf_counter()
    run_dir = Path(resume) if resume else unique_run_dir(cfg.output_dir, cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    console(f"fedray: run '{cfg.name}' -> {run_dir}")

    with ray_session(cfg):
        missing = resource_problems(cfg)
        if missing:
            raise ConfigError(
                ["the Ray cluster can never place these actors: " + "; ".join(missing)],
                "clients.resources / server.resources",
            )
        server = ray.remote(Server).options(
            name=f"fedray-server/{run_dir.name}/{os.getpid()}",
            **cfg.server.resources.as_ray_options(),
        ).remote(cfg, prepared.dataset, str(run_dir), run_dir.name)
        first_round = 1
        if resume:
            first_round = ray.get(server.resume_from.remote(str(run_dir))) + 1
            console(f"resumed from round {first_round - 1}")
        info = ray.get(server.start.remote())
        console(
            f"{info['num_actors']} client actor(s) for {cfg.clients.num_clients} clients on "
            f"{info['num_nodes']} node(s) {info['devices']}; {info['num_params']:,} parameters "
            f"({time.perf_counter() - started:.1f} s)"
        )
        status = "interrupted"
        try:
            for server_round in range(first_round, cfg.server.rounds + 1):
                result, failures = ray.get(server.run_round.remote(server_round))
                for note in failures:
                    console(f"  warning: {note}")
                console(format_round(result, cfg.server.rounds))
            status = "completed"
        finally:
            summary = ray.get(server.finish.remote(status))
            ray.kill(server)
    summary["run_dir"] = str(run_dir)
    summary["wall_s"] = time.perf_counter() - started
    RunDirectory(run_dir).write_summary(summary)
    return summary
