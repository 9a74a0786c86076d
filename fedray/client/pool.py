"""The set of client actors, and which actor hosts which client.

`actor_per_client`: actor i hosts client i. `pool`: `pool_size` actors, client c
on actor c % pool_size. The mapping is sticky, so a client's shard and its
per-client state stay on one actor and no data moves after start-up; the
server sends one call per selected client, and an actor runs its calls in turn.
"""

from __future__ import annotations

import numpy as np
import ray

from fedray.client.actor import ClientActor
from fedray.config.schema import Placement, RunConfig
from fedray.data.federated import FederatedDataset
from fedray.types import ClientId, FitInstructions


def actor_index(client_id: ClientId, cfg: RunConfig) -> int:
    if cfg.clients.placement is Placement.pool:
        return client_id % cfg.clients.num_actors
    return client_id


def clients_table(actors: list[dict], num_examples: np.ndarray) -> list[dict]:
    """clients.parquet's rows, one per client id: its actor and where that actor runs.

    `actors` are the actors' `describe()` answers in actor order. Later columns
    (per-client profile statistics) join on `client_id`.
    """
    rows = [
        {
            "client_id": int(cid),
            "actor": index,
            "node_id": actor["node_id"],
            "node_ip": actor["node_ip"],
            "pid": actor["pid"],
            "device": actor["device"],
            "gpu_ids": ",".join(actor["gpu_ids"]),
            "num_examples": int(num_examples[cid]),
        }
        for index, actor in enumerate(actors)
        for cid in actor["clients"]
    ]
    return sorted(rows, key=lambda r: r["client_id"])


class ClientPool:
    """Creates the client actors and routes each client's work to its actor."""

    def __init__(self, cfg: RunConfig, dataset: FederatedDataset, run_name: str):
        self.cfg = cfg
        remote_cls = ray.remote(ClientActor)
        self.actors = []
        for i in range(cfg.clients.num_actors):
            hosted = [c for c in range(cfg.clients.num_clients) if actor_index(c, cfg) == i]
            shards = {c: dataset.shard(c) for c in hosted}
            options = cfg.clients.actor_resources(i).as_ray_options()
            actor = remote_cls.options(name=f"{run_name}/client-actor-{i}", **options).remote(
                cfg, dataset.info, shards
            )
            self.actors.append(actor)
        self.num_examples = np.diff(dataset.offsets)

    def describe(self) -> list[dict]:
        """Blocks until every actor is up; where each one runs."""
        return ray.get([a.describe.remote() for a in self.actors])

    def all_clients(self) -> np.ndarray:
        return np.arange(self.cfg.clients.num_clients)

    def fit(self, ins: FitInstructions, params_ref: ray.ObjectRef) -> ray.ObjectRef:
        actor = self.actors[actor_index(ins.client_id, self.cfg)]
        return actor.fit.remote(ins, params_ref)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
