"""Clients' kept state under unlearning: forgotten clients' states deleted from a run's
client state store, the other clients' carried into the unlearned run's store.

A store file (`fedray.client.store`) holds the states of every client of one actor
that a round committed, and the pending states then in flight; forgetting a client
rewrites each file that holds it without it (atomically, as a commit writes it) and
deletes a file left empty. `fedray unlearn` does both after a method succeeded: the
unlearned run's checkpoint names the remaining clients' states, which must be in its
own store to resume, and the source's store keeps nothing of a forgotten client.
"""

from __future__ import annotations

import os
import re
from typing import Collection, NamedTuple

from fedray.client.store import StateCodec, StateStore

_ACTOR = re.compile(r"^actor_(\d{5})$")


class Forgotten(NamedTuple):
    """What `forget_clients` changed in a store."""

    rewritten: int
    """Files that held a forgotten client and others: written again without it."""
    deleted: int
    """Files that held only forgotten clients: deleted."""


def actors_in(state_dir: str) -> list[int]:
    """The actor numbers with a folder in `state_dir` (none if it does not exist)."""
    if not os.path.isdir(state_dir):
        return []
    return sorted(int(m.group(1)) for m in map(_ACTOR.match, os.listdir(state_dir)) if m)


def _without(content: dict, clients: Collection[int]) -> tuple[dict, dict]:
    committed = {c: s for c, s in content["committed"].items() if c not in clients}
    pending = {c: p for c, p in content["pending"].items() if c not in clients}
    return committed, pending


def forget_clients(state_dir: str, codec: StateCodec, clients: Collection[int]) -> Forgotten:
    """Delete `clients`' committed and pending states from every file of the store."""
    rewritten = deleted = 0
    for actor in actors_in(state_dir):
        store = StateStore(state_dir, actor, codec)
        for server_round in store.rounds():
            content = store.read(server_round)
            committed, pending = _without(content, clients)
            if len(committed) == len(content["committed"]) and len(pending) == len(content["pending"]):
                continue
            if committed or pending:
                store.write(server_round, committed, pending)
                rewritten += 1
            else:
                store.prune([r for r in store.rounds() if r != server_round])
                deleted += 1
    return Forgotten(rewritten, deleted)


def carry_states(source_dir: str, target_dir: str, codec: StateCodec, rounds: Collection[int],
                 forget: Collection[int]) -> int:
    """Copy the files of `rounds` (those a checkpoint names) from the source store to the
    target store, without `forget`'s states; the number of files written. Both runs
    host each client on the same actor (unlearning keeps the clients and the pool)."""
    written = 0
    for actor in actors_in(source_dir):
        source, target = StateStore(source_dir, actor, codec), StateStore(target_dir, actor, codec)
        for server_round in sorted(set(rounds) & set(source.rounds())):
            committed, pending = _without(source.read(server_round), forget)
            if committed or pending:
                target.write(server_round, committed, pending)
                written += 1
    return written
