"""The no-framework floor: the same local training and FedAvg in one plain Python loop.

Same data split, model, local training (`train_local`), seeds, client sampling and
weighted mean as a fedray run of the same config, with no Ray, no actors, no
object store, no files. fedray's time per round is reported against this.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedray.client.train import train_local
from fedray.config.schema import RunConfig
from fedray.data.federated import build_federated_dataset
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec, set_flat
from fedray.models.tasks import TASKS
from fedray.server.loop import client_seed


def run_floor(cfg: RunConfig) -> list[float]:
    """Seconds per round."""
    data = build_federated_dataset(cfg.data, cfg.clients.num_clients, cfg.seed)
    task = TASKS.build(data.info.task)
    device = torch.device("cpu")
    model = build_model(cfg.model, data.info, cfg.seed)
    spec = param_spec(model)
    global_params = get_flat(model, spec)
    local = np.empty_like(global_params)
    total = np.zeros_like(global_params)
    test = task.prepare(data.test, device)
    shards = {}
    rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
    times = []
    for server_round in range(1, cfg.server.rounds + 1):
        started = time.perf_counter()
        chosen = rng.choice(cfg.clients.num_clients, cfg.server.clients_per_round, replace=False)
        total.fill(0.0)
        weight = 0
        for cid in sorted(int(c) for c in chosen):
            if cid not in shards:
                shards[cid] = task.prepare(data.shard(cid), device)
            set_flat(model, spec, global_params)
            result = train_local(model, task, shards[cid], cfg.train, client_seed(cfg.seed, server_round, cid))
            get_flat(model, spec, out=local)
            local -= global_params
            torch.from_numpy(total).add_(torch.from_numpy(local), alpha=result.num_examples)
            weight += result.num_examples
        global_params += total / weight
        if server_round % cfg.server.eval_every == 0 or server_round == cfg.server.rounds:
            set_flat(model, spec, global_params)
            model.eval()
            task.evaluate(model, test, 1024)
        times.append(time.perf_counter() - started)
    return times
