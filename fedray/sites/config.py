"""A site's own YAML (`fedray site serve SITE.yaml`): who it is, where it listens, its files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import field
from typing import List, Optional

from fedray.config.errors import ConfigError
from fedray.config.federation import TlsConfig
from fedray.config.schema import RunConfig


@dataclasses.dataclass
class SiteAgentConfig:
    """One site: an organisation's Ray cluster hosting its clients of one federation's run."""

    name: str = ""
    """This site's name, as `federation.sites[].name` gives it and its certificate states."""
    run: str = ""
    """The federation's experiment YAML, this site's own copy: the site trains only this
    config (the server's must match it), and its dotted paths are code this site runs."""
    listen: str = "127.0.0.1:50051"
    """`host:port` this site's agent listens on (port 0: any free port, printed at start)."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """This site's mutual TLS files: the federation CA and its own certificate and key."""
    server_name: str = "server"
    """The name the federation server's certificate must state (role `server`)."""
    state_dir: str = "site-state"
    """Where this site's clients keep their state between rounds (`fedray.client.store`)."""
    audit_log: Optional[str] = None
    """Append-only JSON lines of every message to and from the server; None: `<state_dir>/audit.jsonl`."""
    data_path: Optional[str] = None
    """This site's data folder or file, replacing the path of the `data.sites` entry that
    holds its clients (read on this site's nodes only); None: the experiment's own."""
    ray_address: Optional[str] = None
    """The site's Ray cluster to join (`auto`, `host:port`); None: start a local Ray."""
    num_cpus: Optional[float] = None
    """CPUs of the local Ray this agent starts (None: Ray's count of the machine's)."""
    allow_code: List[str] = field(default_factory=list)
    """Dotted paths of the experiment's code this site agrees to run (as `fedray run --allow-code`)."""


def load_site_config(path: str) -> SiteAgentConfig:
    """The site YAML at `path`; ConfigError naming the file and key on any problem."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        merged = OmegaConf.merge(OmegaConf.structured(SiteAgentConfig), raw)
        site = OmegaConf.to_object(merged)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError) as err:
        raise ConfigError([f"cannot read the site config: {str(err).splitlines()[0]}"], path) from None
    problems = ([] if site.name else ["name is empty"]) + site.tls.errors("tls")
    if not site.run:
        problems.append("run is empty: give the federation's experiment YAML")
    if ":" not in site.listen:
        problems.append(f"listen must be host:port, got {site.listen!r}")
    if problems:
        raise ConfigError(problems, path)
    base = os.path.dirname(os.path.abspath(path))
    for key in ("run", "state_dir"):
        setattr(site, key, os.path.join(base, os.path.expanduser(getattr(site, key))))
    site.tls = TlsConfig(*(os.path.join(base, os.path.expanduser(p)) for p in (site.tls.ca, site.tls.cert,
                                                                                site.tls.key)))
    return site


def experiment_digest(cfg: RunConfig) -> str:
    """SHA-256 of the experiment both sides must agree on: the config without what is each
    party's own (TLS files, audit log, state folder, output folder, Ray connection)."""
    import json

    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    tree["federation"].update(tls=None, audit_log=None)
    tree.update(output_dir=None, ray=None)
    tree["clients"]["state_dir"] = None
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()
