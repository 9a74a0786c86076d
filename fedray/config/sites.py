"""`data.sites`: where each client's rows live when they are the client's own files."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import List

SITE_DATASETS = ("idx", "text")
"""Registered datasets read from a path (`data.path`), which a site's path can replace;
a dotted-path dataset that reads `data.path` works the same way."""


@dataclasses.dataclass
class SiteConfig:
    """One site's data: files that only the nodes running its clients need to see."""

    clients: List[int] = field(default_factory=list)
    """Client ids (0-based) whose rows are this site's; `data.partition` splits the
    site's rows among them (`natural`: one per owner of the site's data)."""
    path: str = ""
    """The site's data in the format `data.dataset` reads (an `idx` folder, a `text` file
    or folder), read on the node where these clients run: `~` and `$VARS` expand there.
    The driver and the server never open it."""


def site_problems(sites: List[SiteConfig], num_clients: int, dataset: str, path: str | None,
                  rank_rule: str | None, schedule: str | None) -> list[str]:
    """Every client in exactly one site, a dataset that reads paths, and the server's own
    data in `data.path`; problems name the key."""
    if not sites:
        return []
    out = []
    if dataset not in SITE_DATASETS and ":" not in dataset:
        out.append(f"data.sites reads each site's files with data.dataset, which must read a path "
                   f"({', '.join(SITE_DATASETS)} or a dotted path); got data.dataset={dataset}")
    if path is None:
        out.append("data.sites needs data.path: the server's own data (its held-out split is what it "
                   "evaluates on), read by the driver and the server, never by a client")
    seen: dict[int, int] = {}
    for i, site in enumerate(sites):
        if not site.path:
            out.append(f"data.sites[{i}].path is empty")
        if not site.clients:
            out.append(f"data.sites[{i}].clients is empty")
        bad = sorted(c for c in site.clients if not 0 <= c < num_clients)
        if bad:
            out.append(f"data.sites[{i}].clients {bad} out of range 0..{num_clients - 1}")
        twice = sorted({c for c in site.clients if c in seen})
        if twice:
            out.append(f"data.sites[{i}].clients {twice} are already at data.sites[{seen[twice[0]]}]")
        seen.update({c: i for c in site.clients if c not in seen})
    missing = sorted(set(range(num_clients)) - set(seen))
    if missing and len(missing) < num_clients:
        shown = missing[:10] + (["..."] if len(missing) > 10 else [])
        out.append(f"data.sites: clients {shown} are at no site; with data.sites every client's rows are at "
                   f"its site (clients.num_clients={num_clients})")
    if rank_rule == "by_examples":
        out.append("model.peft.rank_rule=by_examples ranks clients by their data, which only their sites "
                   "know before the actors start; with data.sites use uniform, round_robin or client_ranks")
    if schedule == "owners":
        out.append("data.schedule.name=owners names owners of one dataset; with data.sites each site has "
                   "owners of its own (use classes or rotation)")
    return out
