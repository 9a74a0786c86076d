"""One federated round, top to bottom.

select -> broadcast -> train -> collect -> validate -> aggregate -> apply ->
evaluate. The server actor calls `run_round` once per attempt at a round;
checkpointing and metrics files are the actor's job after it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayError

from fedray.selection.base import SelectionRequest
from fedray.server.validate import norm_problem, update_problem
from fedray.types import ClientResult, FitInstructions, RoundResult

if TYPE_CHECKING:
    from fedray.server.actor import Server

logger = logging.getLogger("fedray.server")


def client_seed(seed: int, server_round: int, client_id: int) -> int:
    """A seed per (run, round, client), independent of actor and arrival order."""
    return int(np.random.SeedSequence([seed, server_round, client_id]).generate_state(1)[0])


@dataclasses.dataclass
class RoundTally:
    """What the collect phase counted."""

    succeeded: int = 0
    rejected: int = 0
    bytes_up: int = 0
    losses: list = dataclasses.field(default_factory=list)
    norms: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    clients: list = dataclasses.field(default_factory=list)


def run_round(server: "Server", server_round: int, attempt: int) -> tuple[RoundResult | None, list[str]]:
    """One attempt at a round. Returns (row, notes); row is None, and the global
    model untouched, if fewer than `server.min_clients` clients succeeded."""
    cfg, state = server.cfg, server.state
    started = time.perf_counter()

    # ---- select among the clients whose actors are up ----------------------
    available = server.pool.available_clients()
    request = SelectionRequest(server_round, available, cfg.server.clients_per_round)
    selected, state.selector_state = server.selector.select(request, state.selector_state, server.rng)

    # ---- broadcast: the global weights enter the object store once ----------
    params_ref = ray.put(state.params)
    pending = {}
    for cid in selected:
        ins = FitInstructions(server_round, cid, client_seed(cfg.seed, server_round, cid))
        pending[server.pool.fit(ins, params_ref)] = cid

    # ---- collect; validate and aggregate in client order as results arrive --
    server.in_order.reset(sorted(selected))
    server.aggregator.reset()
    tally = RoundTally()
    deadline = None if cfg.server.round_timeout_s is None else started + cfg.server.round_timeout_s
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not ready:
            break
        cid = pending.pop(ready[0])
        result = _fetch(server, ready[0], cid, server_round)
        if not result.ok:
            tally.notes.append(f"client {cid} failed: {result.error}")
        tally.bytes_up += result.num_bytes
        for released_cid, released in server.in_order.arrive(cid, result if result.ok else None):
            if released is not None:
                _validate_and_add(server, released_cid, released, tally)
    for ref, cid in pending.items():  # past the deadline: late results are dropped
        ray.cancel(ref)
        tally.notes.append(f"client {cid} timed out after {cfg.server.round_timeout_s} s")
        for released_cid, released in server.in_order.arrive(cid, None):
            if released is not None:
                _validate_and_add(server, released_cid, released, tally)

    if tally.succeeded < cfg.server.min_clients:
        tally.notes.append(
            f"round {server_round} attempt {attempt}: {tally.succeeded} of {len(selected)} "
            f"client(s) succeeded, fewer than server.min_clients={cfg.server.min_clients}"
        )
        return None, tally.notes

    # ---- apply the aggregate through the strategy's transform chain ---------
    mean_delta = server.aggregator.result()
    step, state.strategy_state = server.strategy.apply(mean_delta, state.strategy_state, state.params)
    state.params += step
    state.norm_history = (state.norm_history + tally.norms)[-cfg.server.validation.norm_window :]

    # ---- evaluate on the server's held-out split ----------------------------
    evaluation = {"loss": float("nan"), "accuracy": float("nan")}
    if server_round % cfg.server.eval_every == 0 or server_round == cfg.server.rounds:
        evaluation = server.evaluate()

    state.server_round = server_round
    round_wall_s = time.perf_counter() - started
    state.wall_s += round_wall_s
    row = RoundResult(
        server_round=server_round,
        clients_selected=len(selected),
        clients_succeeded=tally.succeeded,
        clients_failed=len(selected) - tally.succeeded - tally.rejected,
        updates_rejected=tally.rejected,
        attempts=attempt,
        train_loss=_weighted_mean(tally.losses),
        eval_loss=evaluation["loss"],
        eval_accuracy=evaluation.get("accuracy", float("nan")),
        bytes_up=tally.bytes_up,
        bytes_down=state.params.nbytes * len(selected),
        round_wall_s=round_wall_s,
        wall_s=state.wall_s,
        clients=tuple(tally.clients),
    )
    return row, tally.notes


def _validate_and_add(server: "Server", cid: int, result: ClientResult, tally: RoundTally) -> None:
    """Runs in client-id order, so the norm reference (and every decision) is deterministic."""
    problem, norm = update_problem(result, server.state.params.size)
    if problem is None:
        reference = server.state.norm_history + tally.norms
        problem = norm_problem(norm, reference[-server.cfg.server.validation.norm_window :],
                               server.cfg.server.validation)
    if problem is not None:
        tally.rejected += 1
        tally.notes.append(f"client {cid} update rejected: {problem}")
        return
    tally.succeeded += 1
    tally.clients.append(cid)
    tally.norms.append(norm)
    tally.losses.append((result.train_loss, result.num_examples))
    server.aggregator.add(result.num_examples, result.update)


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


def _weighted_mean(values: list[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else float("nan")
