"""The set of client actors, which actor hosts which client, and which are up.

`actor_per_client`: actor i hosts client i. `pool`: `pool_size` actors, client c
on actor c % pool_size. The mapping is sticky, so a client's shard stays on one actor and no data moves
after start-up; the server sends one call per selected client (with the client's
kept state), and an actor runs its calls in turn.

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
    """Creates the client actors, hands them their shards, routes each client's work."""

    def __init__(self, cfg: RunConfig, dataset: FederatedDataset, name_prefix: str,
                 public: "np.ndarray | None" = None, ranks: np.ndarray | None = None, schedule=None):
        """`ranks`: the LoRA rank of every client (None without adapters); `schedule`: the
        data schedule (`fedray.lifecycle.continual.Schedule`), sent with the shards."""
        self.cfg = cfg
        remote_cls = ray.remote(ClientActor)
        public_ref = None if public is None else ray.put(public)
        self.actors, self._data, self._loading = [], [], {}
        for i in range(cfg.clients.num_actors):
            hosted = [c for c in range(cfg.clients.num_clients) if actor_index(c, cfg) == i]
            hosted_ranks = None if ranks is None else {c: int(ranks[c]) for c in hosted}
            actor = remote_cls.options(
                name=f"{name_prefix}/client-actor-{i}",
                max_restarts=cfg.clients.max_restarts,
                max_task_retries=0,  # a lost round is reported, not silently re-run
                **cfg.clients.actor_resources(i).as_ray_options(),
            ).remote(cfg, dataset.info, hosted, hosted_ranks)
            # The shards go through a method, not the constructor: a restarted actor must
            # not depend on constructor arguments in the object store (ray#53727); the
            # pool keeps these references to send them again after a restart.
            self._data.append((ray.put({c: dataset.shard(c) for c in hosted}), public_ref, schedule))
            self.actors.append(actor)
        self._probes: dict[int, ray.ObjectRef] = {}
        self._started = [a.load.remote(*data) for a, data in zip(self.actors, self._data)]

    def describe(self) -> list[dict]:
        """Blocks until every actor is up and holds its shards; where each one runs."""
        return ray.get(self._started)

    def fit(self, ins: FitInstructions, state, send) -> ray.ObjectRef:
        """Start `ins.client_id`'s round on its actor with its kept `state` and its
        share of the broadcast (`fedray.strategy.exchange.Send`)."""
        actor = self.actors[actor_index(ins.client_id, self.cfg)]
        return actor.fit.remote(ins, state, send.merges, *send.refs.values())

    def stage(self, client_id: ClientId, message) -> ray.ObjectRef:
        """Send `client_id` one stage of a protocol around the round (secure aggregation);
        the reference of its answer."""
        return self.actors[actor_index(client_id, self.cfg)].stage.remote(client_id, message)

    def reload(self, client_id: ClientId) -> None:
        """Send `client_id`'s actor its shards again (it was restarted); calls made after
        this one run after it, on the actor."""
        index = actor_index(client_id, self.cfg)
        self.actors[index].load.remote(*self._data[index])

    def mark_down(self, client_id: ClientId) -> None:
        """The actor of `client_id` died or restarted: take its clients out until it has
        its shards again (the probe re-sends them)."""
        index = actor_index(client_id, self.cfg)
        if index not in self._probes:
            self._probes[index] = self.actors[index].load.remote(*self._data[index])

    def available_clients(self) -> np.ndarray:
        """Ids of clients whose actor is up, sorted."""
        if self._probes:
            refs = list(self._probes.values())
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for index, probe in list(self._probes.items()):
                if probe in ready:
                    try:
                        ray.get(probe)
                        del self._probes[index]  # back, with its shards
                    except RayError:
                        self._probes[index] = self.actors[index].load.remote(*self._data[index])
        down = set(self._probes)
        return np.array([c for c in range(self.cfg.clients.num_clients)
                         if actor_index(c, self.cfg) not in down], dtype=np.int64)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
