"""One synchronous federated round, top to bottom.

select -> broadcast -> train -> collect -> admit -> validate -> aggregate ->
apply -> evaluate. The round is a function of explicit data: the run's
`RoundContext` (config, selector, simulation, exchange, evaluation), the
`Algorithm` (objective terms, client chain, aggregator, server chain), the
`ServerState` it updates, and the client handles. The server actor calls
`run_round` once per attempt at a round; checkpointing and metrics files are
its job after it returns. The asynchronous (FedBuff) step is
`fedray.server.buffered.run_buffered_round`; the pieces below that both use are
named without a leading underscore.

Every result gets a simulated finish time (`fedray.hetero.simulation`). Which
results a round takes (the first `clients_per_round`, none past
`server.deadline_s`) is decided on those computed times, never on arrival
order, and sums run in client-id order, so a round's outcome is deterministic.
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayError, RayTaskError

from fedray.client.actor import NOT_LOADED
from fedray.client.pool import ClientPool
from fedray.hetero.simulation import Timing, admit
from fedray.selection.base import SelectionRequest
from fedray.selection.profiles import Outcome
from fedray.server.context import Reducers, RoundContext, RoundRecord, RoundTally
from fedray.server.state import ServerState
from fedray.server.validate import norm_problem, update_problem
from fedray.strategy.algorithm import Algorithm
from fedray.strategy.exchange import Send, plain_put
from fedray.types import ClientId, ClientResult, FitInstructions, RoundResult, payload_bytes

_MAX_CLOCK_JUMPS = 10_000
TIMED_OUT = "timed out"
SUMMED_CLIENT_METRICS = ("encode_s", "downlink_decode_s", "downlink_decodes")
"""Client-measured figures summed over a round's results into metrics.parquet columns."""


def client_seed(seed: int, server_round: int, client_id: int, launch: int = 0) -> int:
    """A seed per (run, round, client), independent of actor and arrival order; `launch`
    tells apart two runs of one client within a round (async mode)."""
    key = [seed, server_round, client_id] + ([launch] if launch else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def run_round(ctx: RoundContext, algorithm: Algorithm, state: ServerState, clients: ClientPool,
              server_round: int, attempt: int) -> tuple[RoundResult | None, list[str]]:
    """One attempt at a round. Returns (row, notes); row is None, and the global
    model untouched, if fewer than `server.min_clients` clients succeeded."""
    cfg = ctx.cfg
    started = time.perf_counter()
    k = cfg.server.clients_per_round

    # ---- select among clients that are up, online and not given up on ----
    available = wait_for_clients(ctx, state, clients)
    request = SelectionRequest(server_round, available, k, state.profiles, state.sim_time_s)
    selected, state.selector_state = ctx.selector.select(request, state.selector_state, ctx.rng)

    # ---- broadcast: each distinct payload (parameters per layout, the terms'
    # payloads such as SCAFFOLD's control or the teacher's logits) enters the
    # object store once; then every selected client starts training ---------
    tally = ctx.new_tally(server_round)
    sends = broadcast(ctx, algorithm, state, selected, server_round, tally)
    # secure aggregation's key exchange (nothing without it): who drops out here does not train
    sends = ctx.stages.before_launch(server_round, sends, tally)
    for cid in sorted(set(selected) - set(sends)):
        state.profiles.record_outcome(cid, Outcome.failed)
    pending = launch(ctx, state, clients, sends, sorted(sends), server_round)

    # ---- collect: each result gets its simulated finish time ----------------
    # Without over-commitment or a deadline every success counts, so results
    # stream into the aggregate (in client order) as they arrive; otherwise they
    # are held until every finish time is known. Poisson sampling keeps them all.
    k = len(selected) if ctx.selector.keep_all else k
    gated = len(selected) > k or cfg.server.deadline_s is not None
    ctx.in_order.reset(sorted(sends))
    ctx.exchange.aggregator.reset(state.aggregator_state)
    reducers = Reducers(algorithm.terms, state.params.size)
    finish_s: dict[ClientId, float] = {}
    succeeded, held = set(), {}
    for cid, result, timing in collect(ctx, state, clients, pending, sends, server_round, started, tally):
        finish_s[cid] = timing.total_s if result.error != TIMED_OUT else math.inf
        if result.ok:
            succeeded.add(cid)
        if gated:
            held[cid] = result
        else:
            release(ctx, algorithm, state, reducers, cid, result if result.ok else None, tally)

    # ---- admit the first K by simulated finish, none past the deadline ------
    admission = admit(finish_s, succeeded, k, cfg.server.deadline_s)
    for cid in admission.late:
        state.profiles.record_outcome(cid, Outcome.late)
        tally.notes.append(f"client {cid} was late (simulated finish {finish_s[cid]:.1f} s); dropped")
    for cid in sorted(held):
        release(ctx, algorithm, state, reducers, cid, held[cid] if cid in admission.kept else None, tally)
    state.sim_time_s += admission.round_s

    if tally.succeeded < cfg.server.min_clients:
        tally.notes.append(
            f"round {server_round} attempt {attempt}: {tally.succeeded} of {len(selected)} "
            f"client(s) succeeded, fewer than server.min_clients={cfg.server.min_clients}"
        )
        return None, tally.notes
    problem = ctx.stages.after_collect(server_round, tally)  # secure aggregation unmasks the sum
    if problem is not None:
        tally.notes.append(f"round {server_round} attempt {attempt}: {problem}")
        return None, tally.notes

    # ---- aggregate, apply through the server chain, evaluate ----------------
    late = len(admission.late)
    row = apply_and_evaluate(ctx, algorithm, state, reducers, server_round, attempt, started, tally,
                             selected=len(selected), failed=len(selected) - tally.succeeded - tally.rejected - late,
                             late=late, sim_round_s=admission.round_s)
    return row, tally.notes


# ---- pieces shared with the asynchronous step ----------------------------------


def wait_for_clients(ctx: RoundContext, state: ServerState, clients: ClientPool,
                     busy: Iterable[ClientId] = (), need: int | None = None) -> np.ndarray:
    """Ids of the clients that may be selected now: actor up, online on the simulated
    clock, not `busy`, fewer than `clients.max_failures` failures in a row. If fewer
    than `need` (default `server.min_clients`) are online, the simulated clock moves on
    until enough are."""
    cfg = ctx.cfg
    need = cfg.server.min_clients if need is None else need
    up = np.zeros(cfg.clients.num_clients, dtype=bool)
    up[clients.available_clients()] = True
    up &= state.profiles.eligible(cfg.clients.max_failures)
    up[cfg.clients.excluded] = False
    up[list(busy)] = False
    for _ in range(_MAX_CLOCK_JUMPS):
        online = up & ctx.simulation.online(state.sim_time_s)
        if online.sum() >= min(need, up.sum()):
            break
        later = ctx.simulation.next_change(state.sim_time_s)
        if math.isinf(later):
            break
        state.sim_time_s = later
    return np.flatnonzero(online).astype(np.int64)


def broadcast(ctx: RoundContext, algorithm: Algorithm, state: ServerState, selected: Iterable[ClientId],
              server_round: int, tally: RoundTally | None = None) -> dict[ClientId, Send]:
    """What each selected client downloads: the exchange's parameters (per layout, encoded
    by the broadcast codec if there is one) and every term's downlink payloads, each put
    into the object store once (and kept in `tally.downlink` for the server chain)."""
    put = plain_put if ctx.downlink is None else ctx.downlink.put_for(server_round)
    sends = ctx.exchange.broadcast(state.params, state.merges, list(selected), put)
    if ctx.downlink is not None and tally is not None:
        tally.add("downlink_encode_s", ctx.downlink.take_seconds())
    extra: dict = {}
    for term, term_state in zip(algorithm.terms, state.term_states):
        extra.update(term.downlink(term_state, ctx.at(server_round)))
    if tally is not None:
        tally.downlink = extra
    if not extra:
        return sends
    refs = {name: ray.put(value) for name, value in extra.items()}
    size = sum(payload_bytes(value) for value in extra.values())
    return {cid: Send({**s.refs, **refs}, s.num_bytes + size, s.merges) for cid, s in sends.items()}


def launch(ctx: RoundContext, state: ServerState, clients: ClientPool, sends: dict[ClientId, Send],
           client_ids: Iterable[ClientId], server_round: int,
           seed_by_launch: bool = False) -> dict[ray.ObjectRef, tuple[ClientId, int, FitInstructions]]:
    """Start training; {result ref: (client, launch number, instructions)}. Each client
    gets its kept state from the server's copy. The launch number seeds the client's
    simulated bandwidth draws, and with `seed_by_launch` its training too (a client may
    train twice within one async step)."""
    pending, client_ids = {}, list(client_ids)
    config = ctx.instruct({cid: sends[cid].num_bytes for cid in client_ids}) if ctx.instruct else {}
    for cid in client_ids:
        nonce = int(state.profiles.times_selected[cid])
        seed = client_seed(ctx.cfg.seed, server_round, cid, nonce + 1 if seed_by_launch else 0)
        ins = FitInstructions(server_round, cid, seed, payloads=tuple(sends[cid].refs), config=config.get(cid, {}))
        pending[clients.fit(ins, state.client_states.get(cid), sends[cid])] = (cid, nonce, ins)
    return pending


def collect(ctx: RoundContext, state: ServerState, clients: ClientPool, pending: dict,
            sends: dict[ClientId, Send], server_round: int, started: float, tally: RoundTally):
    """Yield (client, result, simulated timing) as results arrive (`ray.wait`), recording
    each in the profiles (and a success's kept state in the server's copy); results not
    in by `server.round_timeout_s` (wall clock) come last, as failures `TIMED_OUT`."""
    timeout_s = ctx.cfg.server.round_timeout_s
    deadline = None if timeout_s is None else started + timeout_s
    pending, retried = dict(pending), set()
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not ready:
            break
        cid, nonce, ins = pending.pop(ready[0])
        result = _fetch(clients, ready[0], cid, server_round)
        if result.error == NOT_LOADED or (_lost_to_a_restart(result.error) and cid not in retried):
            # Ray restarted the actor since its last call (or during it, once): wait until
            # this process's own handle sees it back, hand it its shards and ask again (the
            # client's state is the server's copy, so a call that ran on the old actor
            # changed nothing that counts)
            retried.add(cid)
            if result.error != NOT_LOADED and not clients.wait_until_up(cid):
                yield cid, result, _record(ctx, state, result, nonce, sends[cid].num_bytes, tally)
                continue
            tally.notes.append(f"client {cid}'s actor was restarted; its call was sent again")
            clients.reload(cid)
            pending[clients.fit(ins, state.client_states.get(cid), sends[cid])] = (cid, nonce, ins)
            continue
        yield cid, result, _record(ctx, state, result, nonce, sends[cid].num_bytes, tally)
    for ref, (cid, nonce, _) in pending.items():  # past the wall-clock timeout: dropped
        ray.cancel(ref)
        result = ClientResult(client_id=cid, server_round=server_round, error=TIMED_OUT)
        yield cid, result, _record(ctx, state, result, nonce, sends[cid].num_bytes, tally,
                                   note=f"after {timeout_s} s")


def _record(ctx: RoundContext, state: ServerState, result: ClientResult, nonce: int, bytes_down: int,
            tally: RoundTally, note: str | None = None) -> Timing:
    cid = result.client_id
    timing = ctx.simulation.timing(result, result.server_round, nonce, bytes_down)
    state.profiles.record_round(result, timing.total_s, timing.compute_s, timing.transfer_s,
                                bytes_down, ctx.simulation.examples_per_round(cid))
    tally.bytes_up += result.num_bytes
    tally.bytes_down += bytes_down
    for name in SUMMED_CLIENT_METRICS:
        if name in result.metrics:
            tally.add(name, result.metrics[name])
    if result.ok:
        if result.state is not None:
            state.client_states[cid] = result.state
    else:
        state.profiles.record_outcome(cid, Outcome.failed)
        tally.notes.append(f"client {cid} {result.error} {note}" if note else f"client {cid} failed: {result.error}")
    return timing


def release(ctx: RoundContext, algorithm: Algorithm, state: ServerState, reducers: Reducers,
            cid: ClientId, result: ClientResult | None, tally: RoundTally) -> None:
    """Hand one client's result (None: nothing to add) to the in-order gate; validate
    and add whatever it releases."""
    for released_cid, released in ctx.in_order.arrive(cid, result):
        if released is not None:
            validate_and_add(ctx, algorithm, state, reducers, released_cid, released, tally)


def validate_and_add(ctx: RoundContext, algorithm: Algorithm, state: ServerState, reducers: Reducers,
                     cid: ClientId, result: ClientResult, tally: RoundTally, weight: float = 1.0,
                     staleness: int = 0) -> None:
    """Decode, check and aggregate one update. Runs in a deterministic order (client id;
    in async mode simulated finish), so the norm reference, and every decision, is too.
    The update counts `num_examples x weight`."""
    update, problem = _decode(ctx, algorithm, result, tally)
    norm = math.nan
    if problem is None:
        problem, norm = update_problem(update, result.num_examples, ctx.exchange.update_size(cid))
    missing = reducers.missing(result.payloads)
    if problem is None and missing:
        problem = f"payload(s) {missing} missing"
    if problem is None:
        reference = state.norm_history + tally.norms
        problem = norm_problem(norm, reference[-ctx.cfg.server.validation.norm_window :],
                               ctx.cfg.server.validation)
    if problem is not None:
        tally.rejected += 1
        tally.notes.append(f"client {cid} update rejected: {problem}")
        state.profiles.record_outcome(cid, Outcome.rejected)
        return
    state.profiles.record_outcome(cid, Outcome.aggregated)
    tally.succeeded += 1
    tally.clients.append(cid)
    tally.staleness.append(staleness)
    if not math.isnan(norm):  # a sealed (masked) update has no norm the server could know
        tally.norms.append(norm)
    tally.losses.append((result.train_loss, result.num_examples))
    w = result.num_examples * weight
    tally.total_weight += w
    ctx.exchange.aggregator.add(cid, w, update)
    reducers.add(cid, w, result.payloads)
    if tally.accepted is not None:
        tally.accepted.append((cid, w, update))


def _decode(ctx: RoundContext, algorithm: Algorithm, result: ClientResult, tally: RoundTally):
    """(update, None): the `delta` payload decoded (timed); (None, why) if it cannot be."""
    started = time.perf_counter()
    try:
        update, problem = algorithm.decode(result.update, ctx.at(result.server_round, result.client_id)), None
    except ValueError as err:  # not what the client's codec makes: a bad update, not a crash
        update, problem = None, f"payload cannot be decoded: {err}"
    if algorithm.client_transforms.decode is not None:
        tally.add("decode_s", time.perf_counter() - started)
    return update, problem


def apply_and_evaluate(ctx: RoundContext, algorithm: Algorithm, state: ServerState, reducers: Reducers,
                       server_round: int, attempt: int, started: float, tally: RoundTally, selected: int,
                       failed: int, late: int, sim_round_s: float, scale: float = 1.0) -> RoundResult:
    """Aggregate, fold the aggregate (times `scale`) into the global model through the
    server chain (or as an exact merge), let the terms absorb their payloads,
    evaluate, and return the round's metrics row."""
    cfg = ctx.cfg
    here = ctx.at(server_round, num_aggregated=tally.succeeded, downlink=tally.downlink)
    aggregate, state.aggregator_state = ctx.exchange.aggregator.result()
    before = state.params.copy() if tally.accepted is not None else None
    fold = ctx.exchange.fold(aggregate, scale)
    if fold.merge is not None:
        state.merges.append(np.array(fold.merge))
    else:
        step, state.transform_state = algorithm.server_transforms.apply(
            fold.step, state.transform_state, state.params, here)
        state.params += step
    extra: dict[str, float] = dict(tally.metrics)
    term_states = list(state.term_states)
    for i, (term, combined) in enumerate(zip(algorithm.terms, reducers.results())):
        term_states[i], metrics = term.absorb(term_states[i], combined, here)
        extra.update(metrics)
    state.term_states = tuple(term_states)
    extra.update(tally.metrics)
    state.norm_history = (state.norm_history + tally.norms)[-cfg.server.validation.norm_window :]

    state.server_round = server_round  # evaluate sees the state after this round
    evaluation: dict[str, float] = {}
    if server_round % cfg.server.eval_every == 0 or server_round == ctx.final_round:
        evaluation = ctx.evaluate(state)
    if ctx.observer is not None:
        record = RoundRecord(server_round, before, tuple(tally.accepted or ()), evaluation)
        extra.update(ctx.observer.observe(record, state))

    nan = float("nan")
    extra.update({name: evaluation.get(name, nan) for name in ctx.eval_columns})
    round_wall_s = time.perf_counter() - started
    state.wall_s += round_wall_s
    return RoundResult(
        server_round=server_round,
        clients_selected=selected,
        clients_succeeded=tally.succeeded,
        clients_failed=failed,
        updates_rejected=tally.rejected,
        attempts=attempt,
        train_loss=_weighted_mean(tally.losses),
        eval_loss=evaluation.get("loss", nan),
        eval_accuracy=evaluation.get("accuracy", nan),
        eval_perplexity=evaluation.get("perplexity", nan),
        bytes_up=tally.bytes_up,
        bytes_down=tally.bytes_down,
        round_wall_s=round_wall_s,
        wall_s=state.wall_s,
        clients=tuple(tally.clients),
        clients_late=late,
        sim_round_s=sim_round_s,
        sim_time_s=state.sim_time_s,
        staleness=tuple(tally.staleness),
        kd_loss=extra.pop("kd_loss", nan),
        metrics=extra,
    )


def _fetch(clients: ClientPool, ref: ray.ObjectRef, cid: int, server_round: int) -> ClientResult:
    """The client's result; a dead actor or a lost object becomes a failed result. An
    exception the client did not count as a failure (a bug) propagates and stops the run."""
    try:
        result = ray.get(ref, timeout=60)
    except RayTaskError:
        raise
    except (RayError, GetTimeoutError) as exc:
        if isinstance(exc, (ActorDiedError, ActorUnavailableError)):
            clients.mark_down(cid)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ClientResult(client_id=cid, server_round=server_round,
                            error=f"{type(exc).__name__}: {reason}".rstrip(": "))
    assert result.client_id == cid and result.server_round == server_round, "result routed wrongly"
    return result


def _lost_to_a_restart(error: str | None) -> bool:
    """Whether a call failed only because Ray restarted its actor, before or during it
    ("The actor was restarted", "The actor is restarting"): the actor comes back."""
    return bool(error) and error.startswith("ActorUnavailableError")


def _weighted_mean(values: list[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else float("nan")
