"""One synchronous federated round, top to bottom.

select -> broadcast -> train -> collect -> admit -> validate -> aggregate ->
apply -> evaluate. What each client is sent and how the aggregate is applied
come from `server.exchange` (one flat vector for everyone, or LoRA adapters per
rank). The server actor calls `run_round` once per attempt at a
round; checkpointing and metrics files are the actor's job after it returns.
The asynchronous (FedBuff) step is `fedray.server.buffered.run_buffered_round`;
the helpers below that both use are named without a leading underscore.

Every result gets a simulated finish time (`fedray.hetero.simulation`). Which
results a round takes (the first `clients_per_round`, none past
`server.deadline_s`) is decided on those computed times, never on arrival
order, and sums run in client-id order, so a round's outcome is deterministic.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING, Iterable

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayError

from fedray.hetero.simulation import Timing, admit
from fedray.selection.base import SelectionRequest
from fedray.selection.profiles import Outcome
from fedray.server.validate import norm_problem, update_problem
from fedray.types import ClientId, ClientResult, FitInstructions, RoundResult

if TYPE_CHECKING:
    from fedray.server.actor import Server

logger = logging.getLogger("fedray.server")

_MAX_CLOCK_JUMPS = 10_000


def client_seed(seed: int, server_round: int, client_id: int, launch: int = 0) -> int:
    """A seed per (run, round, client), independent of actor and arrival order; `launch`
    tells apart two runs of one client within a round (async mode)."""
    key = [seed, server_round, client_id] + ([launch] if launch else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


@dataclasses.dataclass
class RoundTally:
    """What the collect and validate phases counted."""

    succeeded: int = 0
    rejected: int = 0
    bytes_up: int = 0
    losses: list = dataclasses.field(default_factory=list)
    norms: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    clients: list = dataclasses.field(default_factory=list)
    staleness: list = dataclasses.field(default_factory=list)
    bytes_down: int = 0
    public_logits: list = dataclasses.field(default_factory=list)
    """(top-k logits on the public set, weight) of each aggregated client."""


def run_round(server: "Server", server_round: int, attempt: int) -> tuple[RoundResult | None, list[str]]:
    """One attempt at a round. Returns (row, notes); row is None, and the global
    model untouched, if fewer than `server.min_clients` clients succeeded."""
    cfg, state = server.cfg, server.state
    started = time.perf_counter()
    k = cfg.server.clients_per_round

    # ---- select among clients that are up, online and not given up on ----
    available = wait_for_clients(server)
    request = SelectionRequest(server_round, available, k, state.profiles, state.sim_time_s)
    selected, state.selector_state = server.selector.select(request, state.selector_state, server.rng)

    # ---- broadcast: each distinct payload (and the foundation model's logits on
    # the public set, if it teaches the clients) enters the object store once --
    broadcast_teacher(server)
    tally = RoundTally()
    pending = launch(server, selected, server_round, tally=tally)

    # ---- collect: each result gets its simulated finish time ----------------
    # Without over-commitment or a deadline every success counts, so results
    # stream into the aggregate (in client order) as they arrive; otherwise they
    # are held until every finish time is known.
    gated = len(selected) > k or cfg.server.deadline_s is not None
    server.in_order.reset(sorted(selected))
    server.aggregator.reset()
    finish_s: dict[ClientId, float] = {}
    succeeded, held = set(), {}
    for cid, result, timing in collect(server, pending, server_round, started, tally):
        finish_s[cid] = timing.total_s if result.error != TIMED_OUT else math.inf
        if result.ok:
            succeeded.add(cid)
        if gated:
            held[cid] = result
        else:
            release(server, cid, result if result.ok else None, tally)

    # ---- admit the first K by simulated finish, none past the deadline ------
    admission = admit(finish_s, succeeded, k, cfg.server.deadline_s)
    for cid in admission.late:
        state.profiles.record_outcome(cid, Outcome.late)
        tally.notes.append(f"client {cid} was late (simulated finish {finish_s[cid]:.1f} s); dropped")
    for cid in sorted(held):
        release(server, cid, held[cid] if cid in admission.kept else None, tally)
    state.sim_time_s += admission.round_s

    if tally.succeeded < cfg.server.min_clients:
        tally.notes.append(
            f"round {server_round} attempt {attempt}: {tally.succeeded} of {len(selected)} "
            f"client(s) succeeded, fewer than server.min_clients={cfg.server.min_clients}"
        )
        return None, tally.notes

    # ---- apply the aggregate, evaluate --------------------------------------
    late = len(admission.late)
    row = apply_and_evaluate(server, server_round, attempt, started, tally, selected=len(selected),
                             failed=len(selected) - tally.succeeded - tally.rejected - late,
                             late=late, sim_round_s=admission.round_s)
    return row, tally.notes


# ---- pieces shared with the asynchronous step ----------------------------------
TIMED_OUT = "timed out"


def broadcast_teacher(server: "Server") -> None:
    """Put this round's teacher logits in the object store once (server -> clients)."""
    teacher = server.distiller.teacher() if server.distiller is not None else None
    server.teacher_ref = None if teacher is None else ray.put(teacher)
    server.teacher_bytes = 0 if teacher is None else teacher.num_bytes


def wait_for_clients(server: "Server", busy: Iterable[ClientId] = (), need: int | None = None) -> np.ndarray:
    """Ids of the clients that may be selected now: actor up, online on the simulated
    clock, not `busy`, fewer than `clients.max_failures` failures in a row. If fewer
    than `need` (default `server.min_clients`) are online, the simulated clock moves on
    until enough are."""
    cfg, state = server.cfg, server.state
    need = cfg.server.min_clients if need is None else need
    up = np.zeros(cfg.clients.num_clients, dtype=bool)
    up[server.pool.available_clients()] = True
    up &= state.profiles.eligible(cfg.clients.max_failures)
    up[list(busy)] = False
    for _ in range(_MAX_CLOCK_JUMPS):
        online = up & server.simulation.online(state.sim_time_s)
        if online.sum() >= min(need, up.sum()):
            break
        later = server.simulation.next_change(state.sim_time_s)
        if math.isinf(later):
            break
        state.sim_time_s = later
    return np.flatnonzero(online).astype(np.int64)


def launch(server: "Server", client_ids: Iterable[ClientId], server_round: int,
           seed_by_launch: bool = False, tally: "RoundTally | None" = None) -> dict[ray.ObjectRef, tuple[ClientId, int]]:
    """Broadcast (`server.exchange`: each distinct payload into the object store once)
    and start training; {result ref: (client, launch number)}. The launch number seeds
    the client's simulated bandwidth draws, and with `seed_by_launch` its training too
    (a client may train twice within one async step)."""
    client_ids = list(client_ids)
    sends = server.exchange.broadcast(server.state, client_ids)
    server.sends.update(sends)
    if tally is not None:
        tally.bytes_down += sum(send.num_bytes for send in sends.values())
    pending = {}
    for cid in client_ids:
        nonce = int(server.state.profiles.times_selected[cid])
        seed = client_seed(server.cfg.seed, server_round, cid, nonce + 1 if seed_by_launch else 0)
        ins = FitInstructions(server_round, cid, seed)
        pending[server.pool.fit(ins, sends[cid].params, server.teacher_ref, sends[cid].merges)] = (cid, nonce)
    return pending


def collect(server: "Server", pending: dict, server_round: int, started: float, tally: RoundTally):
    """Yield (client, result, simulated timing) as results arrive (`ray.wait`), recording
    each in the profiles; results not in by `server.round_timeout_s` (wall clock) come
    last, as failures with error `TIMED_OUT`."""
    timeout_s = server.cfg.server.round_timeout_s
    deadline = None if timeout_s is None else started + timeout_s
    pending = dict(pending)
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not ready:
            break
        cid, nonce = pending.pop(ready[0])
        result = _fetch(server, ready[0], cid, server_round)
        yield cid, result, _record(server, result, nonce, tally)
    for ref, (cid, nonce) in pending.items():  # past the wall-clock timeout: dropped
        ray.cancel(ref)
        result = ClientResult(client_id=cid, server_round=server_round, error=TIMED_OUT)
        yield cid, result, _record(server, result, nonce, tally, note=f"after {timeout_s} s")


def _record(server: "Server", result: ClientResult, nonce: int, tally: RoundTally,
            note: str | None = None) -> Timing:
    sim, profiles = server.simulation, server.state.profiles
    cid = result.client_id
    timing = sim.timing(result, result.server_round, nonce)
    profiles.record_round(result, timing.total_s, timing.compute_s, timing.transfer_s,
                          sim.payload_bytes, sim.examples_per_round(cid))
    tally.bytes_up += result.num_bytes
    if not result.ok:
        profiles.record_outcome(cid, Outcome.failed)
        tally.notes.append(f"client {cid} {result.error} {note}" if note else f"client {cid} failed: {result.error}")
    return timing


def release(server: "Server", cid: ClientId, result: ClientResult | None, tally: RoundTally) -> None:
    """Hand one client's result (None: nothing to add) to the in-order gate; validate
    and add whatever it releases."""
    for released_cid, released in server.in_order.arrive(cid, result):
        if released is not None:
            validate_and_add(server, released_cid, released, tally)


def validate_and_add(server: "Server", cid: int, result: ClientResult, tally: RoundTally,
                     weight: float = 1.0, staleness: int = 0) -> None:
    """Runs in a deterministic order (client id; in async mode simulated finish), so the
    norm reference, and every decision, is too. The update counts `num_examples x weight`."""
    problem, norm = update_problem(result, server.expected_update_size(cid))
    if problem is None:
        reference = server.state.norm_history + tally.norms
        problem = norm_problem(norm, reference[-server.cfg.server.validation.norm_window :],
                               server.cfg.server.validation)
    if problem is not None:
        tally.rejected += 1
        tally.notes.append(f"client {cid} update rejected: {problem}")
        server.state.profiles.record_outcome(cid, Outcome.rejected)
        return
    server.state.profiles.record_outcome(cid, Outcome.aggregated)
    tally.succeeded += 1
    tally.clients.append(cid)
    tally.staleness.append(staleness)
    tally.norms.append(norm)
    tally.losses.append((result.train_loss, result.num_examples))
    if result.public_logits is not None:
        tally.public_logits.append((result.public_logits, result.num_examples * weight))
    server.aggregator.add(cid, result.num_examples * weight, result.update)


def apply_and_evaluate(server: "Server", server_round: int, attempt: int, started: float,
                       tally: RoundTally, selected: int, failed: int, late: int,
                       sim_round_s: float, scale: float = 1.0) -> RoundResult:
    """Apply the aggregate (times `scale`) through the strategy's chain, evaluate, and
    return the round's metrics row."""
    cfg, state = server.cfg, server.state
    mean_delta = server.aggregator.result()
    if scale != 1.0:
        mean_delta *= np.float32(scale)
    server.exchange.apply(state, mean_delta, server.strategy)  # the strategy's chain, or a LoRA merge
    state.norm_history = (state.norm_history + tally.norms)[-cfg.server.validation.norm_window :]
    kd_loss = float("nan")
    if server.distiller is not None and tally.public_logits:  # clients -> server transfer
        logits, weights = zip(*tally.public_logits)
        kd_loss = server.distiller.absorb(logits, weights)

    evaluation = {"loss": float("nan"), "accuracy": float("nan"), "perplexity": float("nan")}
    if server_round % cfg.server.eval_every == 0 or server_round == cfg.server.rounds:
        evaluation = server.evaluate()

    state.server_round = server_round
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
        eval_loss=evaluation["loss"],
        eval_accuracy=evaluation.get("accuracy", float("nan")),
        eval_perplexity=perplexity(evaluation["loss"]),
        bytes_up=tally.bytes_up,
        bytes_down=tally.bytes_down + server.teacher_bytes * selected,
        round_wall_s=round_wall_s,
        wall_s=state.wall_s,
        clients=tuple(tally.clients),
        clients_late=late,
        sim_round_s=sim_round_s,
        sim_time_s=state.sim_time_s,
        staleness=tuple(tally.staleness),
        kd_loss=kd_loss,
    )


def _fetch(server: "Server", ref: ray.ObjectRef, cid: int, server_round: int) -> ClientResult:
    """The client's result; a dead actor or a lost object becomes a failed result."""
    try:
        result = ray.get(ref, timeout=60)
    except (RayError, GetTimeoutError) as exc:
        if isinstance(exc, (ActorDiedError, ActorUnavailableError)):
            server.pool.mark_down(cid)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ClientResult(client_id=cid, server_round=server_round,
                            error=f"{type(exc).__name__}: {reason}".rstrip(": "))
    assert result.client_id == cid and result.server_round == server_round, "result routed wrongly"
    return result


def perplexity(loss: float) -> float:
    """exp(mean held-out loss): per token for a language model; NaN when not evaluated."""
    with np.errstate(over="ignore"):
        return float(np.exp(loss))


def _weighted_mean(values: list[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else float("nan")
