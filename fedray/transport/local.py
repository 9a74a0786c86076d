"""The in-process transport: the round's clients are Python objects in the server's process.

It runs the same round as the Ray transport, without Ray: the round loop's unit
tests use it, and so can anything that wants a federation in one process. A
"client host" is any object with the client actor's members (`fit`, `stage`,
`commit`); `fedray.client.actor.ClientActor` is one.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from fedray.transport import Call, EvaluateCall, StageReplies, Tokens
from fedray.types import ClientId, ClientResult, EvaluateResult, FailureKind, StateRef


class ClientHost(Protocol):
    """What hosts clients: the client actor's members the round calls."""

    def fit(self, ins, merges: tuple, *payloads: Any) -> ClientResult: ...

    def evaluate(self, ins, merges: tuple, *payloads: Any) -> EvaluateResult: ...

    def stage(self, client_id: ClientId, message: Any) -> Any: ...

    def commit(self, server_round: int, committed: dict, spent: dict, keep: dict) -> dict: ...


class LocalTransport:
    """Clients hosted in this process; `host_of(client)` says which host has a client.

    Calls run one after another when `fit` is iterated, in call order; `late` clients'
    calls never return (they time out), `down` clients cannot be reached."""

    def __init__(self, hosts: Sequence[ClientHost], host_of: Callable[[ClientId], int], num_clients: int):
        self.hosts, self.host_of, self.num_clients = list(hosts), host_of, num_clients
        self.down: set[ClientId] = set()
        self.late: set[ClientId] = set()
        self.puts = 0
        """Payloads broadcast so far (each distinct payload once per round)."""

    def available(self) -> np.ndarray:
        return np.array([c for c in range(self.num_clients) if c not in self.down], dtype=np.int64)

    def put(self, value: Any) -> tuple[Any, int]:
        from fedray.types import payload_bytes

        self.puts += 1
        return value, payload_bytes(value)

    def fit(self, calls: Sequence[Call], deadline: float | None) -> Iterator[ClientResult]:
        timed_out = []
        for ins, send in calls:
            if ins.client_id in self.late or (deadline is not None and time.perf_counter() > deadline):
                timed_out.append(ins)
                continue
            host = self.hosts[self.host_of(ins.client_id)]
            yield host.fit(ins, send.merges, *send.refs.values())
        for ins in timed_out:
            yield ClientResult(ins.client_id, ins.server_round, error="timed out", failure=FailureKind.timeout)

    def evaluate(self, calls: Sequence[EvaluateCall], deadline: float | None) -> Iterator[EvaluateResult]:
        timed_out = []
        for ins, send in calls:
            if ins.client_id in self.down or ins.client_id in self.late or (
                    deadline is not None and time.perf_counter() > deadline):
                timed_out.append(ins)
                continue
            yield self.hosts[self.host_of(ins.client_id)].evaluate(ins, send.merges, *send.refs.values())
        for ins in timed_out:
            yield EvaluateResult(ins.client_id, ins.server_round, error="timed out", failure=FailureKind.timeout)

    def stage(self, messages: Mapping[ClientId, Any], timeout_s: float | None) -> StageReplies:
        replies, dropped = {}, {}
        for cid, message in messages.items():
            if cid in self.down or cid in self.late:
                dropped[cid] = "timed out" if cid in self.late else "unavailable"
                continue
            try:
                replies[cid] = self.hosts[self.host_of(cid)].stage(cid, message)
            except (ValueError, OSError) as err:
                dropped[cid] = str(err)
        return StageReplies(replies, dropped)

    def commit(self, server_round: int, committed: Tokens, spent: Tokens, keep: Tokens) -> dict[ClientId, StateRef]:
        refs: dict[ClientId, StateRef] = {}
        for index, host in enumerate(self.hosts):
            mine = [{c: t for c, t in part.items() if self.host_of(c) == index} for part in (committed, spent, keep)]
            refs.update(host.commit(server_round, *mine))
        return refs

