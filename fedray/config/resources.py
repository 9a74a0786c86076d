"""Ray resources of one actor (`clients.resources`, `server.resources`, pinned
clients) and how a placement group spreads its bundles."""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import field
from typing import Dict, List, Optional


class PlacementStrategy(enum.Enum):
    """How a placement group's bundles spread over nodes (Ray's strategies)."""

    PACK = "PACK"
    """As few nodes as possible; spills over when one node is not enough."""
    SPREAD = "SPREAD"
    """As many nodes as possible; shares nodes when there are too few."""
    STRICT_PACK = "STRICT_PACK"
    """All bundles on one node, or not at all."""
    STRICT_SPREAD = "STRICT_SPREAD"
    """Every bundle on a different node, or not at all."""


@dataclasses.dataclass
class ResourcesConfig:
    """Ray resources of one actor; fractional GPUs are allowed."""

    num_cpus: float = 1.0
    """CPUs reserved per actor (fractions allowed); torch uses as many threads."""
    num_gpus: float = 0.0
    """GPUs per actor (fractions allowed: 0.25 puts four actors on one GPU)."""
    memory: Optional[int] = None
    """Bytes of memory to reserve (Ray's `memory` resource), null for none."""
    memory_gb: Optional[str] = None
    """GiB of memory to reserve (Ray's `memory` resource, instead of `memory`), or
    `auto`: a short probe fit before the run measures a client actor's peak and
    reserves it plus a margin, refusing a placement that cannot fit
    (`fedray.cluster.packing`). Client actors only."""
    custom: Dict[str, float] = field(default_factory=dict)
    """Custom Ray resources, e.g. `{silo_a: 1}` to pin to nodes that advertise it."""
    label_selector: Dict[str, str] = field(default_factory=dict)
    """Ray node labels the node must carry, e.g. `{silo: a}` (`ray start --labels silo=a`).
    A value may be `v`, `!v`, `in(v1,v2)` or `!in(v1,v2)`."""

    def errors(self, prefix: str) -> list[str]:
        out = []
        if self.num_cpus < 0:
            out.append(f"{prefix}.num_cpus must be >= 0, got {self.num_cpus}")
        if self.num_gpus < 0:
            out.append(f"{prefix}.num_gpus must be >= 0, got {self.num_gpus}")
        if self.memory is not None and self.memory < 0:
            out.append(f"{prefix}.memory must be >= 0 bytes or null, got {self.memory}")
        elif self.memory_gb is not None:
            out += self._memory_gb_errors(prefix)
        elif self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            out.append(f"{prefix}.num_gpus above 1 must be a whole number, got {self.num_gpus}")
        for key, value in self.custom.items():
            if value < 0:
                out.append(f"{prefix}.custom.{key} must be >= 0, got {value}")
        for key, value in self.label_selector.items():
            if not _LABEL_KEY.match(key):
                out.append(f"{prefix}.label_selector key {key!r} is not a valid label name")
            if not _SELECTOR_VALUE.match(value):
                out.append(
                    f"{prefix}.label_selector.{key} must be 'v', '!v', 'in(v1,v2)' or "
                    f"'!in(v1,v2)' with label values, got {value!r}"
                )
        return out

    def _memory_gb_errors(self, prefix: str) -> list[str]:
        if self.memory is not None:
            return [f"{prefix}.memory and {prefix}.memory_gb are exclusive (got {self.memory} and {self.memory_gb})"]
        if self.memory_gb == "auto":
            return []
        try:
            ok = float(self.memory_gb) > 0
        except ValueError:
            ok = False
        return [] if ok else [f"{prefix}.memory_gb must be a number of GiB > 0 or auto, got {self.memory_gb!r}"]

    @property
    def memory_bytes(self) -> int | None:
        """The memory to reserve in bytes (`memory`, or `memory_gb` once it is a number)."""
        if self.memory_gb is not None and self.memory_gb != "auto":
            return int(float(self.memory_gb) * 2**30)
        return self.memory

    def as_ray_options(self) -> dict:
        """Keyword arguments for `ActorClass.options(...)`."""
        options: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        if self.label_selector:
            options["label_selector"] = dict(self.label_selector)
        return options

    def as_bundle(self) -> dict[str, float]:
        """The placement-group bundle for one such actor: Ray resource names -> amounts."""
        bundle = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory_bytes or 0, **self.custom}
        return {k: float(v) for k, v in bundle.items() if v}


# Kubernetes label syntax, which Ray's node labels and selectors share.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL}$")
_SELECTOR_VALUE = re.compile(rf"^!?({_LABEL}|in\({_LABEL}(, ?{_LABEL})*\))$")


@dataclasses.dataclass
class PinnedClientsConfig:
    """Clients whose actors get their own resources, e.g. to run inside one silo."""

    clients: List[int] = field(default_factory=list)
    """Client ids (0-based) pinned by `resources`."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Replaces `clients.resources` for these clients' actors; unset fields take
    their defaults (`num_cpus: 1`), not the values of `clients.resources`."""
