"""The set of client actors, which actor hosts which client, and which are up.

`actor_per_client`: actor i hosts client i. `pool`: `pool_size` actors, client c
on actor c % pool_size. The mapping is sticky, so a client's shard stays on one actor and no data moves
after start-up; the server sends one call per selected client (with the client's
kept state), and an actor runs its calls in turn.

The driver creates the pool, so the client actors start while the server actor
starts (not after it), and hands it to the server, which routes the rounds' calls.
No training row passes through the driver: each actor gets its share of the data
plan (`fedray.data.plan.ShardPlan`: its clients' row numbers and how to load the
dataset, or their sites' paths) and builds its clients' shards on its own node. The
pool keeps those small references, so a restarted actor (or the new pool of a
restarted server) builds its shards again the same way.

The actors a pool creates are placed as one gang (`fedray.cluster.gang`): all of
them or none, so two runs sharing a cluster never each hold part of what both need.
Actors are created with Ray's restart option. When one dies, its clients fail
for that round and leave selection; a cheap probe call tells when Ray has
brought the actor back (on another node if its node is gone), and they rejoin.

Between runs of one process on one Ray instance (`fedray sweep`, a test session)
a completed run's actors can stay warm (`WarmActors`): the next run whose actors
ask for the same resources takes them over, gang by gang, loading its own config and shards,
instead of paying for new processes and their imports.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayError

from fedray.cluster.gang import Gang
from fedray.cluster.remote import remote_class
from fedray.config.schema import Placement, RunConfig
from fedray.client.store import StateCodec
from fedray.data.plan import DataPlan
from fedray.types import ClientId, EvaluateInstructions, FitInstructions


def actor_index(client_id: ClientId, cfg: RunConfig) -> int:
    if cfg.clients.placement is Placement.pool:
        return client_id % cfg.clients.num_actors
    return client_id


def hosted_clients(cfg: RunConfig, actor: int) -> range:
    """The ids actor `actor` hosts, as a range: it pickles small however many there are."""
    if cfg.clients.placement is Placement.pool:
        return range(actor, cfg.clients.num_clients, cfg.clients.num_actors)
    return range(actor, actor + 1)


def placement_columns(actors: list[dict], num_clients: int) -> dict[str, np.ndarray]:
    """clients.parquet's placement columns, indexed by client id: the client's actor
    and where that actor runs. `actors` are the actors' `describe()` answers, in
    actor order; the columns join the profile table on `client_id`."""
    columns = {name: np.empty(num_clients, dtype=object) for name in
               ("node_id", "node_ip", "actor_device", "gpu_ids")}
    columns["actor"] = np.zeros(num_clients, dtype=np.int64)
    columns["pid"] = np.zeros(num_clients, dtype=np.int64)
    columns["data_source"] = np.full(num_clients, "", dtype=object)
    for index, actor in enumerate(actors):
        hosted = np.asarray(actor["clients"], dtype=np.int64)
        for cid, source in actor.get("sources", {}).items():
            columns["data_source"][cid] = source  # a site's path and the digest of what was read
        columns["actor"][hosted], columns["pid"][hosted] = index, actor["pid"]
        columns["node_id"][hosted], columns["node_ip"][hosted] = actor["node_id"], actor["node_ip"]
        columns["actor_device"][hosted], columns["gpu_ids"][hosted] = actor["device"], ",".join(actor["gpu_ids"])
    return columns


class PoolData(NamedTuple):
    """What the actors are loaded with, as object-store references held for the run."""

    shards: list[ray.ObjectRef]
    """Per actor, its clients' `ShardPlan` (row numbers or site paths, never rows)."""
    public: ray.ObjectRef | None
    """The public inputs of knowledge transfer (`fedray.foundation.public` arrays them)."""
    schedule: Any = None
    """The data schedule (`fedray.lifecycle.continual.Schedule`, small), or None."""

    @classmethod
    def put(cls, cfg: RunConfig, dataset: DataPlan, public: np.ndarray | None = None,
            schedule: Any = None, only: Sequence[int] | None = None) -> "PoolData":
        indices = range(cfg.clients.num_actors) if only is None else only
        shards = [ray.put(dataset.shard_plan(hosted_clients(cfg, i))) for i in indices]
        return cls(shards, None if public is None else ray.put(public), schedule)


class ClientPool:
    """Creates (or takes over) the client actors, loads their shards, routes each client's work."""

    def __init__(self, cfg: RunConfig, dataset: DataPlan, name_prefix: str,
                 public: "pa.Table | None" = None, ranks: np.ndarray | None = None,
                 warm: "WarmActors | None" = None, data: PoolData | None = None, schedule=None,
                 codec: StateCodec | None = None, only: Sequence[int] | None = None):
        """`dataset`: the run's data plan. `ranks`: the LoRA rank of every client (None
        without adapters). `warm`: actors to take over where their resources match.
        `data`: shard plans already in the object store (the pool of a restarted server
        reuses the first pool's). `schedule`: the data schedule
        (`fedray.lifecycle.continual.Schedule`), sent with the shard plans. `codec`: how
        the actors write their state stores (`fedray.client.store`; None: the states stay
        in the actors' memory only). `only`: the actors to create, by index (a site hosts
        only its own clients' actors, `fedray.sites`); None: all of them."""
        self.cfg = cfg
        self.indices = list(range(cfg.clients.num_actors) if only is None else only)
        """The actor numbers this pool holds, in order: `self.actors[k]` is actor `indices[k]`."""
        self._slot = {index: k for k, index in enumerate(self.indices)}
        self.data = data if data is not None else PoolData.put(cfg, dataset, public, schedule, self.indices)
        remote_cls = remote_class("fedray.client.actor:ClientActor")  # the driver imports no torch
        options = [actor_options(cfg, i) for i in self.indices]
        self.keys = [repr(sorted(opts.items())) for opts in options]
        """Each actor's Ray options as a key (what a warm actor must match to be reused)."""
        # Constructor arguments stay small (a range, not 50,000 ids): Ray keeps them to
        # restart the actor, and must not depend on objects that may be gone (ray#53727).
        self._setups = [(cfg, dataset.info, hosted_clients(cfg, i),
                         None if ranks is None else {c: int(ranks[c]) for c in hosted_clients(cfg, i)}, codec)
                        for i in self.indices]
        self.actors: list = [None] * len(self.indices)
        self.gang_of: list[Gang | None] = [None] * len(self.indices)
        """The gang (placement group) each actor runs in: warm actors keep their old one."""
        if warm is not None:
            for gang, kept in warm.take(self.keys):
                for k, actor in kept:
                    self.actors[k], self.gang_of[k] = actor, gang
        fresh = [k for k, actor in enumerate(self.actors) if actor is None]
        self.gang = Gang([cfg.clients.actor_resources(self.indices[k]) for k in fresh],
                         f"{name_prefix}/clients") if fresh else None
        """The gang of the actors this pool created: placed whole or not at all."""
        for j, k in enumerate(fresh):
            self.actors[k] = remote_cls.options(name=f"{name_prefix}/client-actor-{self.indices[k]}",
                                                **self.gang.actor_options(j, options[k])).remote(*self._setups[k])
            self.gang_of[k] = self.gang
        self._probes: dict[int, ray.ObjectRef] = {}
        self._started = [self._load(i) for i in range(len(self.actors))]
        self._shared: list[ray.ObjectRef] = []

    def _load(self, index: int) -> ray.ObjectRef:
        """Hand actor `index` its shard plan, from which it builds its clients' shards (and
        its run's setup, which a warm or restarted actor may not have yet)."""
        return self.actors[index].load.remote(self.data.shards[index], self.data.public, self.data.schedule,
                                              self._setups[index])

    def share_public(self, inputs: np.ndarray) -> None:
        """Give every actor the public inputs of knowledge transfer, known only once the
        server's foundation model has loaded or generated them; an actor loaded again
        (after a restart) gets them with its shards."""
        self.data = self.data._replace(public=ray.put(inputs))
        self._shared = [actor.share_public.remote(self.data.public) for actor in self.actors]

    def num_examples(self) -> np.ndarray:
        """Examples per client, as the actors built them (blocks until they have): the
        sizes of site clients, which nobody else can count."""
        sizes = np.zeros(self.cfg.clients.num_clients, dtype=np.int64)
        for actor in ray.get(self._started):
            sizes[list(actor["num_examples"])] = list(actor["num_examples"].values())
        return sizes

    def describe(self) -> list[dict]:
        """Blocks until every actor is up and holds its shards; where each one runs."""
        ray.get(self._shared)
        return ray.get(self._started)

    def fit(self, ins: FitInstructions, send) -> ray.ObjectRef:
        """Start `ins.client_id`'s round on its actor with its share of the broadcast
        (`fedray.strategy.exchange.Send`)."""
        actor = self.actors[self._slot_of(ins.client_id)]
        return actor.fit.remote(ins, send.merges, *send.refs.values())

    def evaluate(self, ins: EvaluateInstructions, send) -> ray.ObjectRef:
        """Start `ins.client_id`'s evaluation on its actor with its share of the broadcast."""
        actor = self.actors[self._slot_of(ins.client_id)]
        return actor.evaluate.remote(ins, send.merges, *send.refs.values())

    def stage(self, client_id: ClientId, message) -> ray.ObjectRef:
        """Send `client_id` one stage of a protocol around the round (secure aggregation);
        the reference of its answer."""
        return self.actors[self._slot_of(client_id)].stage.remote(client_id, message)

    def commit(self, server_round: int, committed: dict, spent: dict, keep: dict, retain=None) -> list[ray.ObjectRef]:
        """Send every actor the round's commit, each part cut to the clients it hosts
        (`fedray.client.actor.ClientActor.commit`); the references of their answers."""
        parts = [({}, {}, {}) for _ in self.actors]
        for i, part in enumerate((committed, spent, keep)):
            for cid, token in part.items():
                parts[self._slot_of(cid)][i][cid] = token
        return [actor.commit.remote(server_round, *part, retain) for actor, part in zip(self.actors, parts)]

    def reload(self, client_id: ClientId) -> None:
        """Send `client_id`'s actor its shards again (it was restarted); calls made after
        this one run after it, on the actor."""
        self._load(self._slot_of(client_id))

    def wait_until_up(self, client_id: ClientId, limit_s: float = 120.0) -> bool:
        """Block until `client_id`'s actor answers a call made through this process's own
        handle (at most `limit_s`): after Ray restarts an actor, a caller's handle may hear
        of it later than the process that saw it come back. False if it did not answer."""
        actor = self.actors[self._slot_of(client_id)]
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                ray.get(actor.describe.remote(), timeout=max(0.1, deadline - time.monotonic()))
                return True
            except ActorUnavailableError:
                time.sleep(0.05)
            except (RayError, GetTimeoutError):
                return False
        return False

    def mark_down(self, client_id: ClientId) -> None:
        """The actor of `client_id` died or restarted: take its clients out until it has
        its shards again (the probe re-sends them)."""
        index = self._slot_of(client_id)
        if index not in self._probes:
            self._probes[index] = self._load(index)

    def available_clients(self) -> np.ndarray:
        """Ids of clients whose actor is up, sorted."""
        up = np.zeros(self.cfg.clients.num_clients, dtype=bool)
        for index in self.indices:
            up[list(hosted_clients(self.cfg, index))] = True
        if not self._probes:
            return np.flatnonzero(up).astype(np.int64)
        refs = list(self._probes.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for index, probe in list(self._probes.items()):
            if probe in ready:
                try:
                    ray.get(probe)
                    del self._probes[index]  # back, with its shards
                except RayError:
                    self._probes[index] = self._load(index)
        for slot in self._probes:
            up[list(hosted_clients(self.cfg, self.indices[slot]))] = False
        return np.flatnonzero(up).astype(np.int64)

    def _slot_of(self, client_id: ClientId) -> int:
        """Where in `self.actors` the actor of `client_id` is."""
        return self._slot[actor_index(client_id, self.cfg)]

    def shutdown(self) -> None:
        """Kill the actors and give their gangs' resources back."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        for gang in {id(g): g for g in self.gang_of if g is not None}.values():
            gang.release()

    def unplaced(self) -> str | None:
        """What the actors this pool created still wait for, if Ray has not placed their
        gang (for the error of a run whose actors did not come up)."""
        if self.gang is None or self.gang.is_placed():
            return None
        return self.gang.describe()


def actor_options(cfg: RunConfig, index: int) -> dict:
    """Ray options of client actor `index` (what a warm actor must match to be reused)."""
    return {
        "max_restarts": cfg.clients.max_restarts,
        "max_task_retries": 0,  # a lost round is reported, not silently re-run
        **cfg.clients.actor_resources(index).as_ray_options(),
    }


class WarmActors:
    """Idle client actors of completed runs, by gang, for the next run.

    Kept only within one process and one Ray instance; `release` (at the latest when
    the sweep or session ends) kills them. A run takes over whole gangs only: a gang
    partly used would keep its unused bundles reserved, which another actor of the run
    may need. A run evicts the gangs it will not take before it starts, so idle actors
    never hold resources another run needs.
    """

    def __init__(self) -> None:
        self._idle: list[tuple[Gang | None, list[tuple[str, Any]]]] = []
        """(gang, [(options key, actor)]) per kept gang; actors without a bundle alone."""

    def __len__(self) -> int:
        return sum(len(members) for _, members in self._idle)

    def take(self, keys: Sequence[str]) -> list[tuple[Gang | None, list[tuple[int, Any]]]]:
        """The kept gangs whose actors all fit the slots with these option keys, each
        with the slot (index into `keys`) every actor of it fills; they are no longer idle."""
        taken, kept = self._fitting(keys)
        self._idle = kept
        return taken

    def keep(self, pool: ClientPool) -> None:
        """A completed run's actors stay up, in their gangs, for the next run."""
        by_gang: dict[int, tuple[Gang | None, list]] = {}
        for key, actor, gang in zip(pool.keys, pool.actors, pool.gang_of):
            if gang is None or gang.group is None:
                self._idle.append((gang, [(key, actor)]))
            else:
                by_gang.setdefault(id(gang), (gang, []))[1].append((key, actor))
        self._idle.extend(by_gang.values())

    def evict(self, cfg: RunConfig | None = None) -> None:
        """Kill the idle gangs the run of `cfg` will not take over (all of them if None)."""
        keys = [] if cfg is None else [repr(sorted(actor_options(cfg, i).items()))
                                       for i in range(cfg.clients.num_actors)]
        taken, dropped = self._fitting(keys)
        for gang, members in dropped:
            for _, actor in members:
                ray.kill(actor, no_restart=True)
            if gang is not None:
                gang.release()
        self._idle = [(gang, [(keys[k], actor) for k, actor in members]) for gang, members in taken]

    def release(self) -> None:
        self.evict(None)

    def _fitting(self, keys: Sequence[str]) -> tuple[list, list]:
        """Split the kept gangs into those that fit free slots of `keys` (in order kept,
        each with the slots its actors fill) and the rest."""
        free: dict[str, list[int]] = {}
        for k, key in enumerate(keys):
            free.setdefault(key, []).append(k)
        fits, rest = [], []
        for gang, members in self._idle:
            need: dict[str, int] = {}
            for key, _ in members:
                need[key] = need.get(key, 0) + 1
            if all(len(free.get(key, ())) >= n for key, n in need.items()):
                fits.append((gang, [(free[key].pop(0), actor) for key, actor in members]))
            else:
                rest.append((gang, members))
        return fits, rest
