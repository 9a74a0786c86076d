"""Multi-objective selection: expected round latency against cost, on the Pareto front.

A selection S of K clients has two costs to minimise: its latency
`L(S) = max_i d_i` (a round waits for its slowest client) and its cost
`C(S) = sum_i c_i` (GPU-seconds, or seconds x a price per client type). As in
the multi-objective resource optimisers of big-data schedulers, the selector
computes the whole front of non-dominated trade-offs and lets one weight pick
the operating point: `weight` 1 is the fastest round, 0 the cheapest.

The front is exact. For a latency bound l, the cheapest K clients with
`d_i <= l` form the least costly selection of latency at most l; so sweeping l
over the sorted durations (keeping the K cheapest in a heap) yields a selection
that dominates or equals every possible one, and filtering those leaves the
front. O(m log m) for m candidates. Durations and costs are the profiles'
estimates: last measured where known, else the device prior.

The front is computed over `ceil(candidates x K)` clients drawn at random each
round (all available ones when that covers them): without that draw the
same cheap, fast clients would train every round and the model would only
learn their data.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np

from fedray.config.scheduling import Cost
from fedray.config.schema import SelectionConfig
from fedray.selection.base import SELECTORS, Selector, SelectionRequest, draw_candidates, require_profiles


class FrontPoint(NamedTuple):
    latency: float
    cost: float
    members: tuple[int, ...]
    """Positions in the candidate arrays, sorted."""


@SELECTORS.register("pareto")
def pareto(cfg: SelectionConfig) -> Selector:
    p = cfg.pareto

    def init(num_clients: int):
        return ()

    def select(request: SelectionRequest, state, rng: np.random.Generator):
        profiles = require_profiles(request, "pareto")
        candidates, k = draw_candidates(request, p.candidates, rng)
        pool = np.sort(candidates)
        latency = profiles.duration_estimate()[pool]
        cost = profiles.compute_estimate()[pool]
        if p.cost is Cost.price:
            cost = cost * np.array([p.prices.get(t, 1.0) for t in profiles.client_type[pool]])
        point = choose(pareto_front(latency, cost, k), p.weight)
        return [int(pool[i]) for i in point.members], state

    return Selector(init, select)


def pareto_front(latency: np.ndarray, cost: np.ndarray, k: int) -> list[FrontPoint]:
    """Every non-dominated (latency, cost) trade-off of choosing k of the clients,
    fastest first; one selection per point."""
    if k <= 0:
        return [FrontPoint(0.0, 0.0, ())]
    order = np.lexsort((np.arange(len(latency)), cost, latency))
    heap: list[tuple[float, int]] = []  # the k cheapest so far, as (-cost, -position)
    candidates, changed = [], False
    sorted_latency, sorted_cost = latency[order].tolist(), cost[order].tolist()
    for rank, i in enumerate(order.tolist()):
        item = (-sorted_cost[rank], -i)
        # a selection is only new when the k cheapest changed (the one just added stayed
        # in): the others repeat the last one, which the front drops anyway
        changed |= len(heap) < k or heapq.heappushpop(heap, item) != item
        if len(heap) < k:
            heapq.heappush(heap, item)
        if changed and len(heap) == k and (rank + 1 == len(order) or sorted_latency[rank + 1] > sorted_latency[rank]):
            members = tuple(sorted(-j for _, j in heap))
            chosen = list(members)
            candidates.append(FrontPoint(float(latency[chosen].max()), float(cost[chosen].sum()), members))
            changed = False
    front: list[FrontPoint] = []
    for point in sorted(candidates):
        if not front or point.cost < front[-1].cost:
            front.append(point)
    return front


def choose(front: list[FrontPoint], weight: float) -> FrontPoint:
    """The front point minimising weight x latency + (1 - weight) x cost, each scaled to
    [0, 1] over the front; ties go to the faster point."""
    latency = np.array([f.latency for f in front])
    cost = np.array([f.cost for f in front])
    score = weight * _unit(latency) + (1.0 - weight) * _unit(cost)
    return front[int(np.argmin(score))]


def _unit(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)
