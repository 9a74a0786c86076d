"""The site agent (`fedray site serve SITE.yaml`): one organisation's clients, served over mutual TLS.

The agent starts (or joins) the site's own Ray cluster, builds the data plan of the
federation's experiment from its own copy of the experiment YAML, and creates the
client actors of its clients only, with the pool the single-cluster run uses (same
resources, pinning, placement, restarts, state store). Its clients' rows are read
here and their kept state is written to this site's `state_dir`; neither leaves.

It serves the transport's operations (`fedray.transport.Transport`) on one gRPC
method, each call answered by the site's own `RayTransport`. Every call is checked
first: the peer's certificate must be the federation server's (CA-signed, role
`server`, the configured name), and a call may name only this site's clients.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import time
from typing import Any, Iterator

import numpy as np

from fedray.config.schema import RunConfig
from fedray.sites.config import SiteAgentConfig, experiment_digest
from fedray.sites.wire import METHOD, AuditLog, Channel, WireError, wire_types
from fedray.transport import Call

logger = logging.getLogger("fedray.site")


class Refused(Exception):
    """A call this site will not answer (the peer or the request is not allowed)."""


class SiteAgent:
    """The site's clients behind the transport's operations, for the server only."""

    def __init__(self, site: SiteAgentConfig, cfg: RunConfig, pool, types, say=print):
        from fedray.transport.ray import RayTransport

        me = [s for s in cfg.federation.sites if s.name == site.name]
        self.site, self.cfg, self.pool, self.say = site, cfg, pool, say
        self.clients = frozenset(me[0].clients)
        self.transport = RayTransport(pool)
        self.digest = experiment_digest(cfg)
        chunk = int(cfg.federation.chunk_mb * 2**20)
        audit = AuditLog(site.audit_log or f"{site.state_dir}/audit.jsonl", site.name)
        self.channel = Channel(types, chunk, audit)

    # ---- the gRPC method -------------------------------------------------------------------
    def call(self, frames: Iterator[bytes], context) -> Iterator[bytes]:
        """Check the peer, read one request, stream its answers."""
        import grpc

        peer = context.peer()
        try:
            self._check_peer(context)
            header, request = next(self.channel.receive(frames, "server"))
            answers = self._answer(header.kind, header.server_round, request)
            for kind, value in answers:
                yield from self.channel.send(kind, header.server_round, value, "server")
        except Refused as err:
            self.say(f"site {self.site.name}: refused a call from {peer}: {err}")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"site {self.site.name}: {err}")
        except (WireError, StopIteration) as err:
            self.say(f"site {self.site.name}: a broken message from {peer}: {err}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"site {self.site.name}: {err or 'no message'}")

    def _check_peer(self, context) -> None:
        from fedray.sites.ca import identity

        pem = (context.auth_context() or {}).get("x509_pem_cert")
        if not pem:
            raise Refused("the peer sent no certificate (sites answer the federation server over mutual TLS only)")
        name, role = identity(pem[0])
        if role != "server" or name != self.site.server_name:
            raise Refused(f"the peer's certificate names {name!r} (role {role!r}); this site answers only "
                          f"the federation server {self.site.server_name!r} (role 'server')")

    def _answer(self, kind: str, server_round: int, request: Any) -> Iterator[tuple[str, Any]]:
        if kind == "hello":
            yield "hello", self._hello(request)
        elif kind == "available":
            up = self.transport.available()
            yield "available", up[np.isin(up, sorted(self.clients))]
        elif kind in ("fit", "evaluate"):
            for result in self._calls(kind, request):
                yield "result" if kind == "fit" else "evaluation", result
        elif kind == "stage":
            messages, timeout_s = request
            self._own(messages)
            replies = self.transport.stage(messages, timeout_s)
            yield "stage", (replies.replies, replies.dropped)
        elif kind == "commit":
            self._own({c for part in request[1:] for c in part})
            yield "commit", self.transport.commit(*request)
        else:
            raise Refused(f"unknown request kind {kind!r}")

    def _hello(self, request: dict) -> dict:
        if request.get("site") != self.site.name:
            raise Refused(f"the server dialled site {request.get('site')!r}; this is site {self.site.name!r}")
        if request.get("experiment") != self.digest:
            raise Refused(f"the server's experiment config differs from this site's {self.site.run} (SHA-256 "
                          f"{str(request.get('experiment'))[:12]}... vs {self.digest[:12]}...): a site trains only "
                          "the experiment it agreed to")
        actors = self.pool.describe()
        for actor in actors:
            actor["clients"] = list(actor["clients"])
            actor["site"] = self.site.name
        self.say(f"site {self.site.name}: the server connected (experiment {self.digest[:12]})")
        return {"site": self.site.name, "clients": sorted(self.clients), "actors": actors}

    def _own(self, clients) -> None:
        foreign = sorted(int(c) for c in clients if int(c) not in self.clients)
        if foreign:
            raise Refused(f"clients {foreign[:10]} are not hosted at this site (it hosts {sorted(self.clients)})")

    def _calls(self, kind: str, request: dict) -> Iterator[Any]:
        """A fit's or an evaluation's calls, run by this site's Ray transport, with their
        payloads put into this site's object store once each."""
        import ray

        from fedray.strategy.exchange import Send

        self._own(c[0].client_id for c in request["calls"])
        refs = [ray.put(value) for value in request["payloads"]]
        calls = [Call(ins, Send({name: refs[i] for name, i in named}, 0, tuple(refs[i] for i in merges)))
                 for ins, named, merges in request["calls"]]
        timeout_s = request["timeout_s"]
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        yield from getattr(self.transport, kind)(calls, deadline)


def site_run_config(site: SiteAgentConfig) -> RunConfig:
    """The experiment as this site runs it: its own state folder and data path."""
    from fedray.config.errors import ConfigError
    from fedray.config.load import load_run_config

    cfg = load_run_config(site.run, allow_code=site.allow_code)
    mine = [s for s in cfg.federation.sites if s.name == site.name]
    if not mine:
        raise ConfigError([f"site {site.name!r} is not in federation.sites of {site.run} "
                           f"({[s.name for s in cfg.federation.sites]})"], site.run)
    cfg = dataclasses.replace(cfg, clients=dataclasses.replace(cfg.clients, state_dir=site.state_dir))
    if site.data_path is not None:
        sites = [dataclasses.replace(s, path=site.data_path) if set(s.clients) & set(mine[0].clients) else s
                 for s in cfg.data.sites]
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sites=sites))
    return cfg


def build_pool(site: SiteAgentConfig, cfg: RunConfig, dataset):
    """The client actors of this site's clients on the connected Ray, building their
    shards from `dataset` (the experiment's `DataPlan`), and the message types."""
    from fedray.client.pool import ClientPool, actor_index
    from fedray.client.store import StateCodec
    from fedray.lifecycle.continual.schedule import build_schedule
    from fedray.models.adapters import client_ranks
    from fedray.server.serialize import decode, encode
    from fedray.server.state_types import StateTypes

    mine = next(s for s in cfg.federation.sites if s.name == site.name)
    actors = sorted({actor_index(c, cfg) for c in mine.clients})
    ranks = None if cfg.model.peft is None else client_ranks(cfg.model.peft, dataset.sizes())
    types = StateTypes.of(cfg)
    pool = ClientPool(cfg, dataset, f"fedray-site/{site.name}", None, ranks,
                      schedule=build_schedule(cfg.data.schedule, dataset.owner_names),
                      codec=StateCodec(functools.partial(encode, types=types), functools.partial(decode, types=types)),
                      only=actors)
    return pool, wire_types(types)


def serve(site: SiteAgentConfig, cfg: RunConfig, dataset, say=print) -> None:
    """Run the site until interrupted: Ray, the client actors, then the gRPC server.
    `cfg`: `site_run_config(site)`; `dataset`: its checked data plan (`fedray.launcher.prepare`)."""
    import ray

    from fedray.sites.tls import server_credentials

    credentials = server_credentials(site.tls)  # unreadable files fail before Ray starts
    ray.init(address=site.ray_address or "local", num_cpus=site.num_cpus, include_dashboard=False,
             log_to_driver=False)
    try:
        pool, types = build_pool(site, cfg, dataset)
        agent = SiteAgent(site, cfg, pool, types, say)
        server, port = listen(agent, site.listen, credentials)
        say(f"site {site.name}: serving clients {sorted(agent.clients)} on port {port} "
            f"(state in {site.state_dir})")
        # SIGTERM (a service manager, `kill`) stops serving and then Ray, in order; Ray's own
        # handler, installed by ray.init, would abort the process instead.
        signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=2))
        try:
            server.wait_for_termination()
        finally:
            server.stop(grace=2)
        say(f"site {site.name}: stopped")
    finally:
        ray.shutdown()


def listen(agent: SiteAgent, address: str, credentials):
    """A gRPC server with `agent.call` as its one method, on TLS only; (server, port)."""
    from concurrent import futures

    import grpc

    service, method = METHOD.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(service, {method: grpc.stream_stream_rpc_method_handler(agent.call)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 2**27),
                                  ("grpc.max_send_message_length", 2**27)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port(address, credentials)
    server.start()
    return server, port
