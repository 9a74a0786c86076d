"""The server's link to one site: a mutually authenticated gRPC channel, its checks, its reconnects."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

from fedray.cluster.errors import ClusterError
from fedray.config.federation import FederationConfig, FederationSite
from fedray.sites.wire import METHOD, Channel, WireError

_GRACE_S = 10.0
"""A fit's gRPC deadline beyond the round's: the site answers its own timeouts first."""
_MAX_BACKOFF_S = 30.0
_TLS_WORDS = ("handshake", "certificate", "ssl", "tls", "peer name", "alpn", "verification", "unauthenticated")
"""Words of gRPC's failure details that say the TLS handshake, not the network, failed."""


class SiteLost(Exception):
    """The site cannot be reached now (down, restarting, network): its clients fail the round."""


class SiteRefused(ClusterError):
    """The site or its certificate is not what the federation says: the run stops (exit 2)."""


class SiteLink:
    """One site as the server reaches it."""

    def __init__(self, site: FederationSite, fed: FederationConfig, channel: Channel, experiment: str):
        self.site, self.fed, self.channel, self.experiment = site, fed, channel, experiment
        self._grpc = None
        self._method = None
        self._lock = threading.Lock()
        self.up = False
        self.next_try = 0.0
        self.backoff = fed.reconnect_backoff_s
        self.losses = 0
        """Times this site was lost during the run (each fails its clients for a round)."""

    def __hash__(self) -> int:
        return id(self)

    # ---- operations -----------------------------------------------------------------------
    def hello(self) -> list[dict]:
        """Reach the site within `connect_timeout_s` and check its identity and clients."""
        deadline = time.monotonic() + self.fed.connect_timeout_s
        while True:
            try:
                return self._hello(max(1.0, deadline - time.monotonic()))
            except SiteLost as err:
                if time.monotonic() >= deadline:
                    raise SiteRefused(f"site {self.site.name!r} at {self.site.address} did not answer within "
                                      f"federation.connect_timeout_s={self.fed.connect_timeout_s:g} s ({err}); "
                                      "is `fedray site serve` running there?") from None
                time.sleep(0.25)

    def _hello(self, timeout: float) -> list[dict]:
        reply = self._one("hello", 0, {"site": self.site.name, "experiment": self.experiment}, timeout)
        if reply["site"] != self.site.name:
            raise SiteRefused(f"site at {self.site.address} says it is {reply['site']!r}, "
                              f"federation.sites names {self.site.name!r} there")
        if sorted(reply["clients"]) != sorted(self.site.clients):
            raise SiteRefused(f"site {self.site.name!r} claims clients {sorted(reply['clients'])}, but "
                              f"federation.sites gives it {sorted(self.site.clients)}")
        self.up, self.backoff = True, self.fed.reconnect_backoff_s
        return reply["actors"]

    def available(self) -> list[int]:
        """This site's clients while its link is up (the site itself fails a client whose actor
        is down); a lost site is tried again once its backoff is over. No call is made to a
        site that is up: a round costs the sites no extra round trip."""
        if not self.up:
            if time.monotonic() < self.next_try:
                return []
            try:
                self._hello(self.fed.connect_timeout_s)
            except SiteLost:
                self._lost()
                return []
        return list(self.site.clients)

    def stream(self, kind: str, request: dict, server_round: int, timeout_s: float | None) -> Iterator[Any]:
        """A fit's (or an evaluation's) answers, one per client, as the site sends them."""
        limit = self.fed.call_timeout_s if timeout_s is None else min(self.fed.call_timeout_s, timeout_s + _GRACE_S)
        try:
            yield from self._call(kind, server_round, request, limit)
        except SiteLost:
            self._lost()
            raise

    def stage(self, messages: dict, timeout_s: float | None, server_round: int) -> tuple[dict, dict]:
        limit = self.fed.call_timeout_s if timeout_s is None else timeout_s + _GRACE_S
        return tuple(self._guarded("stage", server_round, (messages, timeout_s), limit))

    def commit(self, server_round: int, committed: dict, spent: dict, keep: dict) -> dict:
        return self._guarded("commit", server_round, (server_round, committed, spent, keep), self.fed.call_timeout_s)

    def close(self) -> None:
        if self._grpc is not None:
            self._grpc.close()

    # ---- the channel ----------------------------------------------------------------------
    def _guarded(self, kind: str, server_round: int, value: Any, timeout: float) -> Any:
        if not self.up:
            raise SiteLost("not connected")
        try:
            return self._one(kind, server_round, value, timeout)
        except SiteLost:
            self._lost()
            raise

    def _lost(self) -> None:
        """Down until `next_try`; the channel is made anew then (gRPC's own reconnect backoff
        would otherwise keep failing calls for up to minutes after the site is back)."""
        if self.up:
            self.losses += 1
        self.close()
        with self._lock:
            self._grpc = self._method = None
        self.up = False
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(_MAX_BACKOFF_S, self.backoff * 2)

    def _one(self, kind: str, server_round: int, value: Any, timeout: float) -> Any:
        answers = list(self._call(kind, server_round, value, timeout))
        if len(answers) != 1:
            raise SiteRefused(f"site {self.site.name!r} answered a {kind} with {len(answers)} messages")
        return answers[0]

    def _call(self, kind: str, server_round: int, value: Any, timeout: float) -> Iterator[Any]:
        import grpc

        frames = self.channel.send(kind, server_round, value, self.site.name)
        try:
            responses = self._stub()(frames, timeout=timeout)
            for _, answer in self.channel.receive(responses, self.site.name):
                yield answer
        except grpc.RpcError as err:
            raise self._failure(err) from None
        except WireError as err:
            raise SiteRefused(f"site {self.site.name!r} sent {err}") from None

    def _stub(self):
        with self._lock:
            if self._method is None:
                import grpc

                from fedray.sites.tls import channel_credentials

                options = [("grpc.ssl_target_name_override", self.site.name),  # its certificate must name it
                           ("grpc.max_receive_message_length", 2**27), ("grpc.max_send_message_length", 2**27)]
                self._grpc = grpc.secure_channel(self.site.address, channel_credentials(self.fed.tls), options)
                self._method = self._grpc.stream_stream(METHOD)
            return self._method

    def _failure(self, err) -> Exception:
        import grpc

        code, details = err.code(), err.details() or ""
        where = f"site {self.site.name!r} at {self.site.address}"
        if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT):
            return SiteRefused(f"{where} refused: {details}")
        if any(word in details.lower() for word in _TLS_WORDS):
            return SiteRefused(f"{where}: the mutual TLS handshake failed ({details}); the site's certificate "
                               f"must be issued by this federation's CA (federation.tls.ca) for the name "
                               f"{self.site.name!r}, and the site must trust the same CA")
        return SiteLost(f"{code.name}: {details}")
