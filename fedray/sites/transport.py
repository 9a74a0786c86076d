"""The gRPC transport: the round reaches clients at sites, each over its own mutually authenticated link.

`GrpcTransport` implements `fedray.transport.Transport` by fanning each operation
out to the sites that host the clients it names, in parallel, one stream per site
and operation. A broadcast payload is sent to a site once per fit however many of
its clients take it. A site that cannot be reached fails its clients for the round
(`FailureKind.unavailable`, counted like any failed client) and is tried again,
with doubling backoff, when the round next asks who is available. A site that
refuses a call (wrong peer, foreign clients, another experiment) stops the run:
that is a deployment error, not a failed client.

`SitesPool` stands where the run's `ClientPool` stands (the driver makes it and
hands it to the server actor): it knows where the sites are, never an actor.
"""

from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Collection, Iterator, Mapping, Sequence

import numpy as np

from fedray.cluster.errors import ClusterError
from fedray.config.schema import RunConfig
from fedray.sites.link import SiteLink, SiteLost
from fedray.transport import Call, StageReplies, Tokens
from fedray.types import ClientId, ClientResult, FailureKind, StateRef, payload_bytes

_GRACE_S = 10.0
"""After the round's deadline, how long the server waits for the sites' own timeout answers."""


class Handle:
    """A broadcast payload as `put` returns it: sent to each site that needs it, once per call."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class GrpcTransport:
    """The federation's sites, as one transport."""

    def __init__(self, cfg: RunConfig, audit_path: str):
        from fedray.server.state_types import StateTypes
        from fedray.sites.config import experiment_digest
        from fedray.sites.wire import AuditLog, Channel, wire_types

        fed = cfg.federation
        channel = Channel(wire_types(StateTypes.of(cfg)), int(fed.chunk_mb * 2**20),
                          AuditLog(fed.audit_log or audit_path, "server"))
        digest = experiment_digest(cfg)
        self.links = [SiteLink(site, fed, channel, digest) for site in fed.sites]
        self.site_of = {c: link for link in self.links for c in link.site.clients}
        self.num_clients = cfg.clients.num_clients
        self._pool = ThreadPoolExecutor(max_workers=max(2, 2 * len(self.links)))
        self._round = 0

    def connect(self) -> list[dict]:
        """Reach every site (within `federation.connect_timeout_s`) and check who it is and
        whose clients it hosts; its actors' descriptions, in actor order. ClusterError
        naming the site otherwise."""
        described = list(self._pool.map(lambda link: link.hello(), self.links))
        return sorted((a for actors in described for a in actors), key=lambda a: min(a["clients"]))

    # ---- Transport ------------------------------------------------------------------------
    def available(self) -> np.ndarray:
        answers = self._pool.map(lambda link: link.available(), self.links)
        up = sorted(int(c) for found in answers for c in found)
        return np.asarray(up, dtype=np.int64)

    def put(self, value: Any) -> tuple[Any, int]:
        return Handle(value), payload_bytes(value)

    def fit(self, calls: Sequence[Call], deadline: float | None) -> Iterator[ClientResult]:
        yield from self._fan_out("fit", calls, deadline, ClientResult)

    def evaluate(self, calls: Sequence, deadline: float | None) -> Iterator:
        """Federated evaluation at the sites (`Transport.evaluate`, where the round has it):
        the same fan-out as a fit, metrics only coming back."""
        from fedray import types

        yield from self._fan_out("evaluate", calls, deadline, getattr(types, "EvaluateResult"))

    def _fan_out(self, kind: str, calls: Sequence, deadline: float | None, failed: type) -> Iterator:
        """One stream per site with its calls; results as they arrive; a lost site's calls
        still out as `failed(..., FailureKind.unavailable)`, calls past the deadline as timeouts."""
        if not calls:
            return
        self._round = calls[0].instructions.server_round
        out: queue.Queue = queue.Queue()
        waiting = {call.instructions.client_id: call.instructions for call in calls}
        by_site = _group(calls, lambda call: self.site_of[call.instructions.client_id])
        timeout_s = None if deadline is None else max(0.0, deadline - time.perf_counter())
        for link, mine in by_site.items():
            answers = link.stream(kind, _fit_request(mine, timeout_s), self._round, timeout_s)
            self._pool.submit(_drain, answers, link, out)
        running = len(by_site)
        while running and waiting:
            wait = None if deadline is None else max(0.0, deadline + _GRACE_S - time.perf_counter())
            try:
                link, item = out.get(timeout=wait)
            except queue.Empty:
                break
            if isinstance(item, failed):
                if waiting.pop(item.client_id, None) is not None:
                    yield item
                continue
            running -= 1
            if isinstance(item, Refusal):
                raise item.err
            if item is not None:  # the site was lost: its clients still out failed the round
                for cid in [c for c in waiting if self.site_of[c] is link]:
                    ins = waiting.pop(cid)
                    yield failed(client_id=cid, server_round=ins.server_round, error=f"site {link.site.name}: {item}",
                                 failure=FailureKind.unavailable)
        for cid, ins in waiting.items():
            yield failed(client_id=cid, server_round=ins.server_round, error="timed out", failure=FailureKind.timeout)

    def stage(self, messages: Mapping[ClientId, Any], timeout_s: float | None) -> StageReplies:
        by_site = _group(messages.items(), lambda item: self.site_of[item[0]])
        replies: dict = {}
        dropped: dict = {}
        futures = {link: self._pool.submit(link.stage, dict(mine), timeout_s, self._round)
                   for link, mine in by_site.items()}
        for link, future in futures.items():
            try:
                got, lost = future.result()
                replies.update(got)
                dropped.update(lost)
            except SiteLost as err:
                dropped.update({cid: f"site {link.site.name}: {err}" for cid, _ in by_site[link]})
        return StageReplies(dict(sorted(replies.items())), dropped)

    def commit(self, server_round: int, committed: Tokens, spent: Tokens, keep: Tokens,
               retain: Collection[int] | None = None) -> dict[ClientId, StateRef]:
        """Every site hears the commit (its pending states are promoted or dropped, its store
        files of rounds not in `retain` deleted); a site that cannot be reached keeps its
        pending states out of date, and its clients are found missing
        (`clients.state_lost`) when they next train, as with a lost actor."""
        self._round = server_round
        parts = {link: tuple({c: t for c, t in part.items() if self.site_of[c] is link}
                             for part in (committed, spent, keep)) for link in self.links}
        rounds = None if retain is None else sorted(retain)
        futures = [self._pool.submit(link.commit, server_round, *part, rounds) for link, part in parts.items()]
        refs: dict[ClientId, StateRef] = {}
        for future in futures:
            try:
                refs.update(future.result())
            except SiteLost:
                pass
        return refs

    def close(self) -> None:
        for link in self.links:
            link.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _fit_request(calls: Sequence[Call], timeout_s: float | None) -> dict:
    """A site's calls, with every distinct payload once (calls name them by position)."""
    payloads: list = []
    index: dict[int, int] = {}

    def slot(handle: Handle) -> int:
        if id(handle) not in index:
            index[id(handle)] = len(payloads)
            payloads.append(handle.value)
        return index[id(handle)]

    wire = [(call.instructions, [(name, slot(h)) for name, h in call.send.refs.items()],
             [slot(h) for h in call.send.merges]) for call in calls]
    return {"calls": wire, "payloads": payloads, "timeout_s": timeout_s}


def _drain(answers: Iterator, link: SiteLink, out: queue.Queue) -> None:
    """Put a site's results on `out` as they arrive, then (link, None), or (link, why) if lost."""
    try:
        for result in answers:
            out.put((link, result))
        out.put((link, None))
    except SiteLost as err:
        out.put((link, str(err)))
    except BaseException as err:  # a refusal or a bug: the round's thread re-raises it
        out.put((link, Refusal(err)))


class Refusal(str):
    """A site's refusal (or a bug) in a worker thread, carried to the round's thread to raise."""

    def __new__(cls, err: BaseException):
        self = super().__new__(cls, str(err))
        self.err = err
        return self


def _group(items, key) -> dict:
    out: dict = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


class SitesPool:
    """What the server actor is handed instead of a `ClientPool` when clients live at sites."""

    data = None
    keys: tuple = ()
    actors: tuple = ()

    def __init__(self, cfg: RunConfig, audit_path: str):
        """`cfg.federation.tls`'s paths are taken relative to this process's folder (the
        folder `fedray run` started in), wherever the server actor runs."""
        import dataclasses
        import os

        tls = type(cfg.federation.tls)(*(os.path.abspath(p) for p in (cfg.federation.tls.ca, cfg.federation.tls.cert,
                                                                      cfg.federation.tls.key)))
        self.cfg = dataclasses.replace(cfg, federation=dataclasses.replace(cfg.federation, tls=tls))
        self.audit_path = audit_path
        self._transport: GrpcTransport | None = None
        self._actors: list[dict] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_transport": None}  # links are made where they are used

    def transport(self) -> GrpcTransport:
        if self._transport is None:
            self._transport = GrpcTransport(self.cfg, self.audit_path)
        return self._transport

    def describe(self) -> list[dict]:
        if self._actors is None:
            self._actors = self.transport().connect()
        return self._actors

    def num_examples(self) -> np.ndarray:
        sizes = np.zeros(self.cfg.clients.num_clients, dtype=np.int64)
        for actor in self.describe():
            for cid, n in actor["num_examples"].items():
                sizes[int(cid)] = n
        return sizes

    def share_public(self, inputs) -> None:
        raise ClusterError("sites do not take knowledge transfer's public inputs yet")

    def unplaced(self) -> str | None:
        """None: each site places its own actors (`fedray.sites.agent`)."""
        return None

    def shutdown(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

