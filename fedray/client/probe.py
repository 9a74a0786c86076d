"""The probe fit of `clients.resources.memory_gb: auto` (`fedray.cluster.packing`): one
client's model built and trained for a few steps in a fresh Ray worker, its peak taken."""

from __future__ import annotations

import dataclasses

from fedray.cluster.packing import GIB, PROBE_STEPS, ProbeResult, packing_problems, reservation_gb
from fedray.config.schema import RunConfig


def probe_fit(cfg: RunConfig, info, shard) -> ProbeResult:
    """Build a client's model as its actor does and train `PROBE_STEPS` steps on `shard`;
    runs in a fresh Ray worker process, so its peak is this fit's alone."""
    import resource

    import torch

    from fedray.client.train import train_local
    from fedray.models.build import build_model
    from fedray.models.device import assigned_device
    from fedray.models.hf import enable_gradient_checkpointing
    from fedray.models.tasks import build_task

    device = assigned_device()
    model = build_model(cfg.model, info, cfg.seed).to(device)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    task = build_task(info, cfg)
    train = dataclasses.replace(cfg.train, local_steps=PROBE_STEPS, dp=None)
    train_local(model, task, task.prepare(shard, device), train, seed=cfg.seed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if device.type != "cuda":
        return ProbeResult(rss)
    return ProbeResult(rss, torch.cuda.max_memory_allocated(device), torch.cuda.get_device_properties(device).total_memory)


def run_probe(cfg: RunConfig, dataset) -> ProbeResult:
    """`probe_fit` on the largest client's shard, in a fresh process with the clients' CPUs and GPUs."""
    import numpy as np
    import ray

    resources = cfg.clients.resources
    largest = int(np.argmax(np.diff(dataset.offsets)))
    task = ray.remote(max_calls=1, num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)(probe_fit)
    return ray.get(task.remote(cfg, dataset.info, dataset.shard(largest)))


def resolve_auto_memory(cfg: RunConfig, dataset, console=print) -> tuple[RunConfig, ProbeResult]:
    """`memory_gb: auto` replaced by the probed reservation (a ConfigError if the actors
    cannot fit); the config to run with and the probe's figures."""
    import ray

    from fedray.config.errors import ConfigError

    probe = run_probe(cfg, dataset)
    nodes = {n["NodeID"]: n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")}
    problems = packing_problems(probe, cfg.clients.num_actors, cfg.clients.resources.num_gpus, nodes)
    if problems:
        raise ConfigError(problems, "clients.resources")
    gb = reservation_gb(probe)
    console(f"memory: a probe fit peaked at {probe.rss_peak / GIB:.2f} GiB"
            + (f" ({probe.gpu_peak / GIB:.2f} GiB on the GPU)" if probe.gpu_total else "")
            + f"; each client actor reserves {gb:.2f} GiB")
    resources = dataclasses.replace(cfg.clients.resources, memory_gb=str(gb))
    return dataclasses.replace(cfg, clients=dataclasses.replace(cfg.clients, resources=resources)), probe
