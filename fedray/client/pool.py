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


class ClientPool:
    """Creates the client actors and routes each client's work to its actor."""

    def __init__(
        self, cfg: RunConfig, dataset: FederatedDataset, run_name: str, ranks: np.ndarray | None = None
    ):
        """`ranks`: the LoRA rank of every client (None without adapters)."""
        self.cfg = cfg
        remote_cls = ray.remote(ClientActor)
        options = cfg.clients.resources.as_ray_options()
        self.actors = []
        for i in range(cfg.clients.num_actors):
            hosted = [c for c in range(cfg.clients.num_clients) if actor_index(c, cfg) == i]
            shards = {c: dataset.shard(c) for c in hosted}
            hosted_ranks = None if ranks is None else {c: int(ranks[c]) for c in hosted}
            actor = remote_cls.options(name=f"{run_name}/client-actor-{i}", **options).remote(
                cfg, dataset.info, shards, hosted_ranks
            )
            self.actors.append(actor)
        self.num_examples = np.diff(dataset.offsets)

    def describe(self) -> list[dict]:
        """Blocks until every actor is up; where each one runs."""
        return ray.get([a.describe.remote() for a in self.actors])

    def all_clients(self) -> np.ndarray:
        return np.arange(self.cfg.clients.num_clients)

    def fit(self, ins: FitInstructions, params_ref: ray.ObjectRef, merges: tuple = ()) -> ray.ObjectRef:
        actor = self.actors[actor_index(ins.client_id, self.cfg)]
        return actor.fit.remote(ins, params_ref, merges)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
