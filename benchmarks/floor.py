"""The floors fedray is measured against.

`run_floor`: the same local training and FedAvg in one plain Python loop: same data
split, model, local training (`train_local`), seeds, client sampling and weighted
mean as a fedray run of the same config, with no Ray, no actors, no object store, no
files. fedray's time per round is reported against this.

`ray_floor`: what no Ray-based framework can avoid paying once per run: a fresh
interpreter that imports ray, starts a local instance (`ray.init`, with the options
fedray uses), creates one 1-CPU actor that imports torch, and shuts Ray down.
fedray's end-to-end time and fixed cost are reported against this.
"""

from __future__ import annotations

import json
import subprocess
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


_RAY_FLOOR = """
import json, time
began = time.perf_counter()
import ray
imported = time.perf_counter()
ray.init(address="local", include_dashboard=False, log_to_driver=False)
started = time.perf_counter()

@ray.remote(num_cpus=1)
class Torch:
    def ready(self):
        import torch
        return torch.__version__

ray.get(Torch.remote().ready.remote())
ready = time.perf_counter()
ray.shutdown()
done = time.perf_counter()
print(json.dumps({"import_ray_s": imported - began, "init_s": started - imported,
                  "actor_s": ready - started, "shutdown_s": done - ready}))
"""


def ray_floor(python: str, env: dict | None = None) -> dict:
    """One fresh interpreter's Ray floor: its phases, and `end_to_end_s` from process
    start to exit (measured from outside, as fedray's runs are)."""
    started = time.perf_counter()
    out = subprocess.run([python, "-c", _RAY_FLOOR], capture_output=True, text=True, env=env, check=True)
    phases = json.loads(out.stdout.strip().splitlines()[-1])
    return {"end_to_end_s": time.perf_counter() - started, **phases}
