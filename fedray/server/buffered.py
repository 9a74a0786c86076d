"""One asynchronous, buffered model update (FedBuff: Nguyen et al., "Federated Learning
with Buffered Asynchronous Aggregation", AISTATS 2022), on the simulated clock.

`server.clients_per_round` clients (the concurrency C) train at all times, each
from the global model that was current when it started. One call makes one
model update, a "round" in metrics.parquet:

1. fill: idle slots get new clients (the selector picks among those not
   training), starting now on the simulated clock from the current model;
2. wait (wall clock) for their results, so every in-flight client's simulated
   finish time is known;
3. take in-flight results in order of simulated finish until `buffer_size`
   updates are accepted; failed ones free their slot, ones staler than
   `server.max_staleness` or longer than `server.deadline_s` are dropped as
   late; the clock moves to the last one taken;
4. apply `sum_i n_i s(tau_i) u_i / sum_i n_i` through the strategy, where
   tau_i counts the model updates since client i started and s is
   `server.staleness` (1/sqrt(1 + tau) by default).

A result is removed from the in-flight list when it is taken, so no update is
applied twice; the ones still in flight wait, already computed, for a later
step and are applied with their (then larger) staleness. Slots are refilled at
each model update rather than at each arrival, so up to `buffer_size` slots may
sit idle between two updates; in exchange all new clients of a step train in
parallel.

Determinism: results are taken in simulated-finish order (ties by client id),
computed from the simulated devices, never in Ray's arrival order. The
in-flight clients, results included, are part of the server state, so a
checkpoint resumes them exactly (at the cost of holding up to C - buffer_size
updates in it).
"""

from __future__ import annotations

import dataclasses
import time

from fedray.selection.base import SelectionRequest
from fedray.selection.profiles import Outcome
from fedray.server.context import Reducers, RoundContext, RoundTally
from fedray.server.loop import (
    apply_and_evaluate,
    broadcast,
    collect,
    launch,
    commit,
    validate_and_add,
    wait_for_clients,
)
from fedray.server.state import ServerState
from fedray.strategy.algorithm import Algorithm
from fedray.transport import Transport
from fedray.types import ClientId, ClientResult, FailureKind, RoundResult


@dataclasses.dataclass(frozen=True)
class InFlight:
    """A client that started training and whose simulated finish has not come yet."""

    client_id: ClientId
    version: int
    """The model it trains from: the global model after this many updates."""
    finish_s: float
    """When it finishes on the simulated clock."""
    result: ClientResult
    late: bool = False
    """It needs longer than `server.deadline_s`: the server gives up on it at `finish_s`."""


def run_buffered_round(ctx: RoundContext, algorithm: Algorithm, state: ServerState, clients: Transport,
                       server_round: int, attempt: int) -> tuple[RoundResult | None, list[str]]:
    """One model update from `buffer_size` buffered results. Returns (row, notes); row is
    None, and the model untouched, if fewer than `server.min_clients` were accepted."""
    cfg = ctx.cfg
    started, clock_at_start = time.perf_counter(), state.sim_time_s
    tally = ctx.new_tally(server_round)
    ctx.exchange.aggregator.reset(state.aggregator_state)
    reducers = Reducers(algorithm.terms, state.params.size)

    # ---- fill the idle slots: new clients train from the current model -----
    launched = _fill(ctx, algorithm, state, clients, server_round, tally)
    failed = late = 0

    # ---- take results in simulated-finish order until the buffer is full ----
    while tally.succeeded < cfg.server.buffer_size:
        if not state.in_flight:
            launched += _fill(ctx, algorithm, state, clients, server_round, tally)
            if not state.in_flight:
                break  # nobody is training and nobody can start
        item = min(state.in_flight, key=lambda f: (f.finish_s, f.client_id, f.version))
        state.in_flight.remove(item)
        state.sim_time_s = max(state.sim_time_s, item.finish_s)
        staleness = state.server_round - item.version
        if item.result.ok and item.result.pending is not None:
            tally.sent[item.client_id] = item.result.pending.token
        if not item.result.ok:
            failed += 1  # recorded (and noted) when its result came in
        elif item.late or (cfg.server.max_staleness is not None and staleness > cfg.server.max_staleness):
            late += 1
            state.profiles.record_outcome(item.client_id, Outcome.late)
            tally.notes.append(f"client {item.client_id} dropped: staleness {staleness}"
                               + (f", longer than server.deadline_s={cfg.server.deadline_s}" if item.late else ""))
        else:
            validate_and_add(ctx, algorithm, state, reducers, item.client_id, item.result, tally,
                             weight=ctx.staleness(staleness), staleness=staleness)

    if tally.succeeded < cfg.server.min_clients:
        tally.notes.append(
            f"update {server_round} attempt {attempt}: {tally.succeeded} update(s) accepted, "
            f"fewer than server.min_clients={cfg.server.min_clients}"
        )
        commit(state, clients, server_round, tally, aggregated=False, keep=_in_flight(state))
        return None, tally.notes

    # ---- apply sum n s(tau) u / sum n, evaluate -----------------------------
    # The aggregator normalises by its weights (sum n s(tau)); FedBuff divides by the
    # examples alone, so stale updates also shrink the step.
    examples = sum(n for _, n in tally.losses)
    row = apply_and_evaluate(ctx, algorithm, state, reducers, server_round, attempt, started, tally,
                             selected=launched, failed=failed, late=late,
                             sim_round_s=state.sim_time_s - clock_at_start,
                             scale=tally.total_weight / examples)
    commit(state, clients, server_round, tally, aggregated=True, keep=_in_flight(state))
    return row, tally.notes


def _in_flight(state: ServerState) -> dict[ClientId, int]:
    """The fits still in flight whose pending states their clients must keep."""
    return {f.client_id: f.result.pending.token for f in state.in_flight if f.result.pending is not None}


def _fill(ctx: RoundContext, algorithm: Algorithm, state: ServerState, clients: Transport,
          server_round: int, tally: RoundTally) -> int:
    """Start clients in the free slots and wait for their results; how many started."""
    cfg = ctx.cfg
    free = cfg.server.clients_per_round - len(state.in_flight)
    if free <= 0:
        return 0
    # a client whose update this step took trains again only once that update is committed
    busy = [f.client_id for f in state.in_flight] + list(tally.committed)
    available = wait_for_clients(ctx, state, clients, busy, need=0 if state.in_flight else 1)
    request = SelectionRequest(server_round, available, free, state.profiles, state.sim_time_s)
    chosen, state.selector_state = ctx.selector.select(request, state.selector_state, ctx.rng)
    chosen = chosen[:free]  # over-commitment: the buffer already takes the first finishers
    if not chosen:
        return 0
    sends = broadcast(ctx, algorithm, state, clients, chosen, server_round, tally)
    calls = launch(ctx, state, sends, chosen, server_round, seed_by_launch=True)
    deadline = cfg.server.deadline_s
    for cid, result, timing in collect(ctx, state, clients, calls, time.perf_counter(), tally):
        if result.failure is FailureKind.timeout:
            continue  # it never reports; its slot is free again
        late = deadline is not None and timing.total_s > deadline
        finish = state.sim_time_s + (deadline if late else timing.total_s)
        state.in_flight.append(InFlight(cid, state.server_round, finish, result, late))
    return len(chosen)
