"""Can the cluster ever place every actor a run needs? Answer before starting them.

Ray queues an actor whose resources no node has, forever; a federated run would
then hang in its first round. This first-fit-decreasing packing of the run's
actors onto the nodes' total resources finds that up front and names what is
missing. It is conservative only in ignoring other jobs' use of the cluster.
"""

from __future__ import annotations

from typing import Mapping, Sequence

Demand = Mapping[str, float]


def actor_demand(options: Mapping) -> dict[str, float]:
    """Ray resource names -> amounts from `.options()` keyword arguments."""
    demand = {"CPU": float(options.get("num_cpus", 0) or 0), "GPU": float(options.get("num_gpus", 0) or 0)}
    if options.get("memory"):
        demand["memory"] = float(options["memory"])
    for key, value in (options.get("resources") or {}).items():
        demand[key] = float(value)
    return {k: v for k, v in demand.items() if v > 0}


def unplaceable(demands: Sequence[tuple[str, Demand]], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """Descriptions of the actors that cannot be placed; empty if all fit.

    `demands` are (label, resources) per actor; `nodes` the total resources of
    each alive node (as in `ray.nodes()[i]["Resources"]`).
    """
    free = [dict(n) for n in nodes]
    order = sorted(range(len(demands)), key=lambda i: -sum(demands[i][1].values()))
    missing: list[str] = []
    for i in order:
        label, demand = demands[i]
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in demand.items()):
                for k, v in demand.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            missing.append(f"{label} needs {_fmt(demand)}; {_largest_gap(demand, nodes)}")
    return missing


def _largest_gap(demand: Demand, nodes: Sequence[Mapping[str, float]]) -> str:
    lacking = sorted(k for k in demand if not any(n.get(k, 0) > 0 for n in nodes))
    if lacking:
        return "no node offers " + ", ".join(repr(k) for k in lacking)
    totals = {k: sum(n.get(k, 0.0) for n in nodes) for k in demand}
    return "cluster total " + _fmt(totals) + ", shared with the run's other actors"


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def check_cluster(demands: Sequence[tuple[str, Demand]]) -> list[str]:
    """`unplaceable` against the connected Ray cluster's alive nodes."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return unplaceable(demands, nodes)
