"""One synchronous federated round, top to bottom.

select -> broadcast -> train -> collect -> admit -> validate -> aggregate ->
apply -> evaluate -> commit -> evaluate on the clients (`fedray.server.federated_eval`).
The round is a function of explicit data: the run's
`RoundContext` (config, selector, simulation, exchange, evaluation), the
`Algorithm` (objective terms, client chain, aggregator, server chain), the
`ServerState` it updates, and the `Transport` that reaches the clients (Ray's,
or an in-process one: nothing here knows Ray). The server actor calls
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

import dataclasses
import math
import time
from typing import Iterable

import numpy as np

from fedray.hetero.simulation import Timing, admit
from fedray.selection.base import SelectionRequest
from fedray.selection.profiles import Outcome
from fedray.server.context import Reducers, RoundContext, RoundRecord, RoundTally
from fedray.server.federated_eval import evaluate_on_clients, is_due, no_evaluation
from fedray.server.state import ServerState
from fedray.server.validate import norm_problem, update_problem
from fedray.strategy.algorithm import Algorithm
from fedray.strategy.exchange import Send
from fedray.transport import RESENT, Call, Transport
from fedray.types import ClientId, ClientResult, FailureKind, FitInstructions, RoundResult, payload_bytes

_MAX_CLOCK_JUMPS = 10_000
SUMMED_CLIENT_METRICS = ("encode_s", "downlink_decode_s", "downlink_decodes", "state_resets")
"""Client-measured figures summed over a round's results into metrics.parquet columns."""


def client_seed(seed: int, server_round: int, client_id: int, launch: int = 0) -> int:
    """A seed per (run, round, client), independent of actor and arrival order; `launch`
    tells apart two runs of one client within a round (async mode)."""
    key = [seed, server_round, client_id] + ([launch] if launch else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def run_round(ctx: RoundContext, algorithm: Algorithm, state: ServerState, clients: Transport,
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
    # payloads such as SCAFFOLD's control or the teacher's logits) is broadcast
    # once (`put`); then every selected client starts training ---------------
    tally = ctx.new_tally(server_round)
    sends = broadcast(ctx, algorithm, state, clients, selected, server_round, tally)
    # secure aggregation's key exchange (nothing without it): who drops out here does not train
    sends = ctx.stages.before_launch(server_round, sends, tally)
    for cid in sorted(set(selected) - set(sends)):
        state.profiles.record_outcome(cid, Outcome.failed)
    calls = launch(ctx, state, sends, sorted(sends), server_round)

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
    for cid, result, timing in collect(ctx, state, clients, calls, started, tally):
        finish_s[cid] = timing.total_s if result.failure is not FailureKind.timeout else math.inf
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
        commit(state, clients, server_round, tally, aggregated=False)
        return None, tally.notes
    problem = ctx.stages.after_collect(server_round, tally)  # secure aggregation unmasks the sum
    if problem is not None:
        tally.notes.append(f"round {server_round} attempt {attempt}: {problem}")
        commit(state, clients, server_round, tally, aggregated=False)
        return None, tally.notes

    # ---- aggregate, apply through the server chain, evaluate ----------------
    late = len(admission.late)
    row = apply_and_evaluate(ctx, algorithm, state, reducers, server_round, attempt, started, tally,
                             selected=len(selected), failed=len(selected) - tally.succeeded - tally.rejected - late,
                             late=late, sim_round_s=admission.round_s)

    # ---- commit: the aggregated clients' pending states become current -------
    commit(state, clients, server_round, tally, aggregated=True)

    # ---- federated evaluation: clients evaluate the new model on their own rows
    if is_due(cfg, server_round, ctx.final_round):
        rows, columns, notes = evaluate_on_clients(ctx, state, clients, server_round)
        state.evaluations.extend(rows)
        state.wall_s += columns["fed_eval_s"]
        tally.notes += notes
        row = dataclasses.replace(row, metrics={**row.metrics, **columns}, sim_time_s=state.sim_time_s,
                                  wall_s=state.wall_s)
    elif cfg.server.evaluation.on_clients:  # the columns exist in every row
        row = dataclasses.replace(row, metrics={**row.metrics, **no_evaluation()})
    return row, tally.notes


def run_attempts(step, ctx: RoundContext, algorithm: Algorithm, state: ServerState, clients: Transport,
                 server_round: int) -> tuple[RoundResult | None, list[str]]:
    """Run a round with `step` (`run_round`, or the async `run_buffered_round`),
    again with a new selection while too few clients succeed, up to
    `server.max_round_retries` times. (None, notes) if every attempt fell short: the
    model is then unchanged (the generator and selector have moved on)."""
    notes: list[str] = []
    attempts = ctx.cfg.server.max_round_retries + 1
    for attempt in range(1, attempts + 1):
        row, attempt_notes = step(ctx, algorithm, state, clients, server_round, attempt)
        notes += attempt_notes
        if row is not None:
            return row, notes
    notes.append(f"round {server_round} fell short of server.min_clients={ctx.cfg.server.min_clients} "
                 f"in {attempts} attempt(s)")
    return None, notes


# ---- pieces shared with the asynchronous step ----------------------------------


def wait_for_clients(ctx: RoundContext, state: ServerState, clients: Transport,
                     busy: Iterable[ClientId] = (), need: int | None = None) -> np.ndarray:
    """Ids of the clients that may be selected now: actor up, online on the simulated
    clock, not `busy`, fewer than `clients.max_failures` failures in a row. If fewer
    than `need` (default `server.min_clients`) are online, the simulated clock moves on
    until enough are."""
    cfg = ctx.cfg
    need = cfg.server.min_clients if need is None else need
    up = np.zeros(cfg.clients.num_clients, dtype=bool)
    up[clients.available()] = True
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


def broadcast(ctx: RoundContext, algorithm: Algorithm, state: ServerState, clients: Transport,
              selected: Iterable[ClientId], server_round: int, tally: RoundTally | None = None) -> dict[ClientId, Send]:
    """What each selected client downloads: the exchange's parameters (per layout, encoded
    by the broadcast codec if there is one) and every term's downlink payloads, each
    broadcast once (and kept in `tally.downlink` for the server chain)."""
    put = clients.put if ctx.downlink is None else ctx.downlink.put_for(server_round, clients.put)
    sends = ctx.exchange.broadcast(state.params, state.merges, list(selected), put, clients.put)
    if ctx.downlink is not None and tally is not None:
        tally.add("downlink_encode_s", ctx.downlink.take_seconds())
    extra: dict = {}
    for term, term_state in zip(algorithm.terms, state.term_states):
        extra.update(term.downlink(term_state, ctx.at(server_round)))
    if tally is not None:
        tally.downlink = extra
    if not extra:
        return sends
    refs = {name: clients.put(value)[0] for name, value in extra.items()}
    size = sum(payload_bytes(value) for value in extra.values())
    return {cid: Send({**s.refs, **refs}, s.num_bytes + size, s.merges) for cid, s in sends.items()}


def launch(ctx: RoundContext, state: ServerState, sends: dict[ClientId, Send], client_ids: Iterable[ClientId],
           server_round: int, seed_by_launch: bool = False) -> dict[ClientId, tuple[int, Call]]:
    """The fit calls, by client: (launch number, call). The launch number seeds the
    client's simulated bandwidth draws, and with `seed_by_launch` its training too (a
    client may train twice within one async step)."""
    calls, client_ids = {}, list(client_ids)
    config = ctx.instruct({cid: sends[cid].num_bytes for cid in client_ids}) if ctx.instruct else {}
    for cid in client_ids:
        nonce = int(state.profiles.times_selected[cid])
        seed = client_seed(ctx.cfg.seed, server_round, cid, nonce + 1 if seed_by_launch else 0)
        ins = FitInstructions(server_round, cid, seed, payloads=tuple(sends[cid].refs), config=config.get(cid, {}),
                              state=state.client_refs.get(cid))
        calls[cid] = (nonce, Call(ins, sends[cid]))
    return calls


def collect(ctx: RoundContext, state: ServerState, clients: Transport, calls: dict[ClientId, tuple[int, Call]],
            started: float, tally: RoundTally):
    """Run the calls; yield (client, result, simulated timing) as results arrive,
    recording each in the profiles; results not in by `server.round_timeout_s` (wall clock) come last, as timeouts."""
    timeout_s = ctx.cfg.server.round_timeout_s
    deadline = None if timeout_s is None else started + timeout_s
    for result in clients.fit([call for _, call in calls.values()], deadline):
        cid = result.client_id
        nonce, call = calls[cid]
        note = f"after {timeout_s} s" if result.failure is FailureKind.timeout else None
        yield cid, result, _record(ctx, state, result, nonce, call.send.num_bytes, tally, note=note)


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
    if result.ok and result.pending is not None:
        tally.sent[cid] = result.pending.token
    if result.metrics.get(RESENT):
        tally.notes.append(f"client {cid}'s actor was restarted; its call was sent again")
    if result.metrics.get("state_resets"):
        tally.notes.append(f"client {cid}'s kept state was missing from its store or did not match its digest; "
                           "it started afresh (clients.state_lost: reset)")
    if not result.ok:
        state.profiles.record_outcome(cid, Outcome.failed)
        tally.notes.append(f"client {cid} {result.error} {note}" if note else f"client {cid} failed: {result.error}")
    return timing


def commit(state: ServerState, clients: Transport, server_round: int, tally: RoundTally, aggregated: bool,
           keep: dict[ClientId, int] | None = None) -> None:
    """The second phase of the round's two-phase commit. The clients whose updates were
    aggregated (if the round completed) make their pending state current; the others
    that sent an update keep only its privacy spend; `keep` (async: in flight) stay
    pending; every other pending state is dropped. The server records each new state's
    round and digest, nothing more."""
    committed = dict(tally.committed) if aggregated else {}
    spent = {cid: token for cid, token in tally.sent.items() if cid not in committed}
    if not (committed or spent or keep):
        return  # nothing pending anywhere: the algorithm keeps no client state
    refs = clients.commit(server_round, committed, spent, keep or {})
    for cid in sorted(set(committed) - set(refs)):
        tally.notes.append(f"client {cid}: its actor did not confirm its state of round {server_round} "
                           "(gone?); the client goes on from its previous state")
    state.client_refs.update(refs)


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
    if result.pending is not None:
        tally.committed[cid] = result.pending.token
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
    if cfg.server.evaluation.on_server and (server_round % cfg.server.eval_every == 0
                                            or server_round == ctx.final_round):
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


def _weighted_mean(values: list[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else float("nan")
