"""Can the cluster ever place every actor a run needs? Answer before starting them.

Ray queues an actor whose resources or labels no node has, forever; a federated
run would then hang in its first round. This packing of the run's actors (and
its server workers' placement group) onto the nodes' total resources finds that
up front and names what is missing. It ignores other jobs' use of the cluster,
so it only fails for what could never run.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

from fedray.config.errors import ConfigError
from fedray.config.schema import PlacementStrategy, ResourcesConfig, RunConfig

_IN = re.compile(r"^(!?)in\((.*)\)$")


@dataclasses.dataclass(frozen=True)
class Node:
    """An alive node: its total resources and its labels."""

    resources: Mapping[str, float]
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    node_id: str = ""


@dataclasses.dataclass(frozen=True)
class Demand:
    """One actor or placement-group bundle to place."""

    label: str
    resources: Mapping[str, float]
    label_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    spread_group: str | None = None
    """Demands sharing a spread group must land on different nodes (STRICT_SPREAD)."""

    @classmethod
    def of(cls, label: str, resources: ResourcesConfig, spread_group: str | None = None) -> "Demand":
        """The demand of one actor (or bundle) with these configured resources."""
        return cls(label, resources.as_bundle(), dict(resources.label_selector), spread_group)


def label_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Ray's label selector semantics: `v`, `!v`, `in(a,b)`, `!in(a,b)` per key."""
    for key, wanted in selector.items():
        found = _IN.match(wanted)
        negate, values = (found.group(1), found.group(2)) if found else ("", wanted)
        if not found and wanted.startswith("!"):
            negate, values = "!", wanted[1:]
        hit = labels.get(key) in {v.strip() for v in values.split(",")}
        if hit == bool(negate):
            return False
    return True


def run_demands(cfg: RunConfig) -> list[Demand]:
    """Everything the run asks Ray for: server actor, client actors, server workers."""
    demands = [Demand.of("server actor", cfg.server.resources)]
    hosted = () if cfg.federation.enabled else range(cfg.clients.num_actors)  # sites host theirs
    demands += [Demand.of(f"client actor {i}", cfg.clients.actor_resources(i)) for i in hosted]
    workers = cfg.server.foundation_model
    if workers.model is not None:
        label = f"foundation model ranks ({workers.placement_strategy.value})"
        if workers.placement_strategy is PlacementStrategy.STRICT_PACK:
            merged = {k: v * workers.num_workers for k, v in workers.resources.as_bundle().items()}
            demands.append(Demand(f"{label}, all {workers.num_workers} bundles on one node", merged,
                                  dict(workers.resources.label_selector)))
        else:
            group = label if workers.placement_strategy is PlacementStrategy.STRICT_SPREAD else None
            demands += [Demand.of(f"{label} bundle {i}", workers.resources, group)
                        for i in range(workers.num_workers)]
    return demands


def unplaceable(demands: Sequence[Demand], nodes: Sequence[Node]) -> list[str]:
    """Descriptions of the demands that cannot be placed; empty if all fit.

    First fit, most constrained first (fewest nodes that could ever hold it),
    then largest first; `nodes` hold the total resources of each alive node.
    """
    free = [dict(n.resources) for n in nodes]
    used_by_group: dict[str, set[int]] = {}

    def candidates(d: Demand) -> list[int]:
        return [i for i, n in enumerate(nodes) if label_matches(d.label_selector, n.labels)
                and all(n.resources.get(k, 0.0) + 1e-9 >= v for k, v in d.resources.items())]

    order = sorted(demands, key=lambda d: (len(candidates(d)), -sum(d.resources.values())))
    missing: list[str] = []
    for demand in order:
        taken = used_by_group.setdefault(demand.spread_group, set()) if demand.spread_group else set()
        for i in candidates(demand):
            if i not in taken and all(free[i].get(k, 0.0) + 1e-9 >= v for k, v in demand.resources.items()):
                for k, v in demand.resources.items():
                    free[i][k] = free[i].get(k, 0.0) - v
                taken.add(i)
                break
        else:
            missing.append(f"{demand.label} needs {_describe(demand)}; {_why(demand, nodes)}")
    return missing


def _describe(demand: Demand) -> str:
    text = _fmt(demand.resources)
    if demand.label_selector:
        text += " on a node labelled " + _fmt(demand.label_selector)
    return text


def _why(demand: Demand, nodes: Sequence[Node]) -> str:
    lacking = sorted(k for k in demand.resources if not any(n.resources.get(k, 0) > 0 for n in nodes))
    if lacking:
        return "no node offers " + ", ".join(repr(k) for k in lacking)
    if demand.label_selector and not any(label_matches(demand.label_selector, n.labels) for n in nodes):
        return "no node has labels matching " + _fmt(demand.label_selector)
    matching = [n for n in nodes if label_matches(demand.label_selector, n.labels)]
    if not any(all(n.resources.get(k, 0.0) + 1e-9 >= v for k, v in demand.resources.items()) for n in matching):
        return "no single node is that large"
    if demand.spread_group:
        return "STRICT_SPREAD needs a different node for every bundle"
    totals = {k: sum(n.resources.get(k, 0.0) for n in matching) for k in demand.resources}
    return "matching nodes total " + _fmt(totals) + ", shared with the run's other actors"


def _fmt(mapping: Mapping[str, object]) -> str:
    def show(v: object) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return "{" + ", ".join(f"{k}: {show(v)}" for k, v in sorted(mapping.items())) + "}"


def unplaceable_error(missing: list[str], where: str) -> ConfigError:
    """The one message for what a cluster can never place (`fedray run` and `fedray submit`)."""
    return ConfigError(
        [f"the Ray cluster{where} can never place these actors:" + "".join(f"\n      {m}" for m in missing)],
        "clients.resources / clients.pinned / server.resources / server.foundation_model.resources",
    )


def check_cluster(cfg: RunConfig) -> list[str]:
    """`unplaceable` for this run against the connected Ray cluster's alive nodes."""
    import ray

    nodes = [Node(n["Resources"], n.get("Labels") or {}, n["NodeID"]) for n in ray.nodes() if n.get("Alive")]
    return unplaceable(run_demands(cfg), nodes)
