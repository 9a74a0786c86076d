"""The set of client actors, which actor hosts which client, and which are up.

`actor_per_client`: actor i hosts client i. `pool`: `pool_size` actors, client c
on actor c % pool_size. The mapping is sticky, so a client's shard and its
per-client state stay on one actor and no data moves after start-up; the
server sends one call per selected client, and an actor runs its calls in turn.

Actors are created with Ray's restart option. When one dies, its clients fail
for that round and leave selection; a cheap probe call tells when Ray has
brought the actor back (on another node if its node is gone), and they rejoin.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray
from ray.exceptions import RayError

from fedray.client.actor import ClientActor
from fedray.config.schema import Placement, RunConfig
from fedray.data.federated import FederatedDataset
from fedray.types import ClientId, FitInstructions


def actor_index(client_id: ClientId, cfg: RunConfig) -> int:
    if cfg.clients.placement is Placement.pool:
        return client_id % cfg.clients.num_actors
    return client_id


def placement_columns(actors: list[dict], num_clients: int) -> dict[str, np.ndarray]:
    """clients.parquet's placement columns, indexed by client id: the client's actor
    and where that actor runs. `actors` are the actors' `describe()` answers, in
    actor order; the columns join the profile table on `client_id`."""
    columns = {name: np.empty(num_clients, dtype=object) for name in
               ("node_id", "node_ip", "actor_device", "gpu_ids")}
    columns["actor"] = np.zeros(num_clients, dtype=np.int64)
    columns["pid"] = np.zeros(num_clients, dtype=np.int64)
    for index, actor in enumerate(actors):
        for cid in actor["clients"]:
            columns["actor"][cid], columns["pid"][cid] = index, actor["pid"]
            columns["node_id"][cid], columns["node_ip"][cid] = actor["node_id"], actor["node_ip"]
            columns["actor_device"][cid], columns["gpu_ids"][cid] = actor["device"], ",".join(actor["gpu_ids"])
    return columns


class ClientPool:
    """Creates the client actors and routes each client's work to its actor."""

    def __init__(self, cfg: RunConfig, dataset: FederatedDataset, name_prefix: str,
                 client_states: dict | None = None, public: "pa.Table | None" = None,
                 ranks: np.ndarray | None = None):
        """`ranks`: the LoRA rank of every client (None without adapters)."""
        self.cfg = cfg
        remote_cls = ray.remote(ClientActor)
        self.actors = []
        for i in range(cfg.clients.num_actors):
            hosted = [c for c in range(cfg.clients.num_clients) if actor_index(c, cfg) == i]
            shards = {c: dataset.shard(c) for c in hosted}
            states = {c: client_states[c] for c in hosted if client_states and c in client_states}
            hosted_ranks = None if ranks is None else {c: int(ranks[c]) for c in hosted}
            actor = remote_cls.options(
                name=f"{name_prefix}/client-actor-{i}",
                max_restarts=cfg.clients.max_restarts,
                max_task_retries=0,  # a lost round is reported, not silently re-run
                **cfg.clients.actor_resources(i).as_ray_options(),
            ).remote(cfg, dataset.info, shards, states, public, hosted_ranks)
            self.actors.append(actor)
        self.num_examples = np.diff(dataset.offsets)
        self._probes: dict[int, ray.ObjectRef] = {}

    def describe(self) -> list[dict]:
        """Blocks until every actor is up; where each one runs."""
        return ray.get([a.describe.remote() for a in self.actors])

    def fit(self, ins: FitInstructions, params_ref: ray.ObjectRef,
            teacher_ref: ray.ObjectRef | None = None, merges: tuple = ()) -> ray.ObjectRef:
        actor = self.actors[actor_index(ins.client_id, self.cfg)]
        return actor.fit.remote(ins, params_ref, teacher_ref, merges)

    def mark_down(self, client_id: ClientId) -> None:
        """The actor of `client_id` died: take its clients out until a probe answers."""
        index = actor_index(client_id, self.cfg)
        if index not in self._probes:
            self._probes[index] = self.actors[index].describe.remote()

    def available_clients(self) -> np.ndarray:
        """Ids of clients whose actor is up, sorted."""
        if self._probes:
            refs = list(self._probes.values())
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for index, probe in list(self._probes.items()):
                if probe in ready:
                    try:
                        ray.get(probe)
                        del self._probes[index]  # back
                    except RayError:
                        self._probes[index] = self.actors[index].describe.remote()
        down = set(self._probes)
        return np.array([c for c in range(self.cfg.clients.num_clients)
                         if actor_index(c, self.cfg) not in down], dtype=np.int64)

    def client_states(self) -> dict:
        """Every client's kept state, gathered from the live actors."""
        merged: dict = {}
        alive = [a for i, a in enumerate(self.actors) if i not in self._probes]
        for states in ray.get([a.export_state.remote() for a in alive]):
            merged.update(states)
        return merged

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
