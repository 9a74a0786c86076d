"""`federation`: the run's clients live at sites, each an organisation's own Ray cluster, reached over mTLS."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import List, Optional


@dataclasses.dataclass
class TlsConfig:
    """The files of one party's mutual TLS: the federation's CA and its own certificate
    (`fedray ca init` / `fedray ca issue`). Paths are read on the machine of that party."""

    ca: str = ""
    """PEM certificate of the federation CA: the only issuer a peer's certificate may have."""
    cert: str = ""
    """PEM certificate of this party (`fedray ca issue NAME --role server|site`)."""
    key: str = ""
    """PEM private key of this party's certificate (keep it readable only by its owner)."""

    def errors(self, where: str) -> list[str]:
        missing = [name for name in ("ca", "cert", "key") if not getattr(self, name)]
        if missing:
            return [f"{where} needs {', '.join(f'{where}.{m}' for m in missing)}: sites are reached over "
                    "mutual TLS only (plaintext is refused); create them with `fedray ca init` and `fedray ca issue`"]
        return []


@dataclasses.dataclass
class FederationSite:
    """One site as the server knows it: its name (its certificate's), where it listens,
    whose clients it hosts."""

    name: str = ""
    """The site's name: its certificate must name it (`fedray ca issue NAME --role site`)."""
    address: str = ""
    """`host:port` where the site's agent (`fedray site serve`) listens."""
    clients: List[int] = field(default_factory=list)
    """Client ids (0-based) hosted at this site: whole client actors (with
    `clients.placement: pool`, client c is on actor c % clients.num_actors)."""


@dataclasses.dataclass
class FederationConfig:
    """Clients hosted by sites (`fedray site serve`), reached over gRPC with mutual TLS.

    Empty `sites` (the default): every client is an actor of the run's own Ray cluster."""

    sites: List[FederationSite] = field(default_factory=list)
    """The federation's sites; every client at exactly one."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """The server's mutual TLS files (a site gives its own in its site YAML)."""
    connect_timeout_s: float = 30.0
    """How long the server waits for a site to answer at start-up (and for each reconnect try)."""
    call_timeout_s: float = 600.0
    """At most this long for one call to a site (a fit's is bounded by `server.round_timeout_s` too)."""
    reconnect_backoff_s: float = 1.0
    """First wait before a lost site is tried again; doubles per failed try, up to 30 s."""
    chunk_mb: float = 1.0
    """Messages travel in chunks of this many MiB (a message of any size streams)."""
    audit_log: Optional[str] = None
    """The server's append-only log of every message to and from sites (one JSON line each:
    round, kind, peer, bytes, sha256); None: `<run_dir>/audit.jsonl`."""

    @property
    def enabled(self) -> bool:
        return bool(self.sites)

    def errors(self, num_clients: int, actor_of) -> list[str]:
        """Every client at one site, whole actors per site, unique names, TLS files given.
        `actor_of(client)`: the client's actor index."""
        if not self.sites:
            return []
        out = self.tls.errors("federation.tls")
        for key, value in (("connect_timeout_s", self.connect_timeout_s), ("call_timeout_s", self.call_timeout_s),
                           ("reconnect_backoff_s", self.reconnect_backoff_s), ("chunk_mb", self.chunk_mb)):
            if not value > 0:
                out.append(f"federation.{key} must be > 0, got {value}")
        seen: dict[int, str] = {}
        names: set[str] = set()
        for i, site in enumerate(self.sites):
            key = f"federation.sites[{i}]"
            if not site.name or site.name in names:
                out.append(f"{key}.name must be a unique, non-empty name, got {site.name!r}")
            names.add(site.name)
            if ":" not in site.address:
                out.append(f"{key}.address must be host:port, got {site.address!r}")
            bad = sorted(c for c in site.clients if not 0 <= c < num_clients)
            if bad or not site.clients:
                out.append(f"{key}.clients must be non-empty ids in 0..{num_clients - 1}, got {bad or '[]'}")
            twice = sorted(c for c in site.clients if c in seen)
            if twice:
                out.append(f"{key}.clients {twice} are already at site {seen[twice[0]]!r}")
            seen.update({c: site.name for c in site.clients})
        missing = sorted(set(range(num_clients)) - set(seen))
        if missing:
            out.append(f"federation.sites: clients {missing[:10]} are at no site (clients.num_clients={num_clients})")
        out += _whole_actors(self.sites, num_clients, actor_of)
        return out


def _whole_actors(sites: List[FederationSite], num_clients: int, actor_of) -> list[str]:
    """A client actor runs at one site: the clients it hosts must all be that site's."""
    site_of = {c: s.name for s in sites for c in s.clients}
    by_actor: dict[int, set] = {}
    for c in range(num_clients):
        by_actor.setdefault(actor_of(c), set()).add(site_of.get(c))
    split = sorted(a for a, where in by_actor.items() if len(where) > 1)
    if split:
        return [f"federation.sites: client actors {split[:5]} would host clients of several sites; with "
                "clients.placement=pool, client c is on actor c % clients.num_actors (give each site whole actors)"]
    return []
