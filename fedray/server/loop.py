"""One federated round, top to bottom.

select -> broadcast -> train -> collect -> validate -> aggregate -> apply ->
evaluate. What each client is sent and how the aggregate is applied come from
`server.exchange` (one flat vector for everyone, or LoRA adapters per rank).
The server actor calls `run_round` once per round; checkpointing and metrics
files are the actor's job after it returns.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayError

from fedray.selection.base import SelectionRequest
from fedray.server.validate import update_problem
from fedray.types import ClientResult, FitInstructions, RoundResult

if TYPE_CHECKING:
    from fedray.server.actor import Server

logger = logging.getLogger("fedray.server")


def client_seed(seed: int, server_round: int, client_id: int) -> int:
    """A seed per (run, round, client), independent of actor and arrival order."""
    return int(np.random.SeedSequence([seed, server_round, client_id]).generate_state(1)[0])


def run_round(server: "Server", server_round: int) -> tuple[RoundResult, list[str]]:
    """Run one round on `server` (mutating its state); returns the row and failure notes."""
    cfg, state = server.cfg, server.state
    started = time.perf_counter()

    # ---- select ------------------------------------------------------------
    request = SelectionRequest(server_round, server.pool.all_clients(), cfg.server.clients_per_round)
    selected, state.selector_state = server.selector.select(request, state.selector_state, server.rng)

    # ---- broadcast: each distinct payload enters the object store once -------
    sends = server.exchange.broadcast(state, selected)
    pending = {}
    for cid in selected:
        ins = FitInstructions(server_round, cid, client_seed(cfg.seed, server_round, cid))
        pending[server.pool.fit(ins, sends[cid].params, sends[cid].merges)] = cid
    bytes_down = sum(send.num_bytes for send in sends.values())

    # ---- collect, validate and aggregate as results arrive ------------------
    server.aggregator.reset(sorted(selected))
    deadline = None if cfg.server.round_timeout_s is None else started + cfg.server.round_timeout_s
    failures: list[str] = []
    rejected, bytes_up = 0, 0
    losses: list[tuple[float, int]] = []
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not ready:
            break
        ref = ready[0]
        cid = pending.pop(ref)
        result = _fetch(ref, cid, server_round)
        if not result.ok:
            failures.append(f"client {cid} failed: {result.error}")
            server.aggregator.skip(cid)
            continue
        bytes_up += result.num_bytes
        problem = update_problem(result, sends[cid].update_size)
        if problem is not None:
            rejected += 1
            failures.append(f"client {cid} update rejected: {problem}")
            server.aggregator.skip(cid)
            continue
        losses.append((result.train_loss, result.num_examples))
        server.aggregator.add(cid, result.num_examples, result.update)
    for ref, cid in pending.items():  # past the deadline: late results are dropped
        ray.cancel(ref)
        failures.append(f"client {cid} timed out after {cfg.server.round_timeout_s} s")
        server.aggregator.skip(cid)

    # ---- apply the aggregate (the strategy's transform chain, or a LoRA merge)
    succeeded = server.aggregator.num_added
    if succeeded >= cfg.server.min_clients:
        server.exchange.apply(state, server.aggregator.result(), server.strategy)
    else:
        failures.append(
            f"round {server_round}: {succeeded} client(s) succeeded, fewer than "
            f"server.min_clients={cfg.server.min_clients}; global model unchanged"
        )

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
        clients_succeeded=succeeded,
        clients_failed=len(selected) - succeeded - rejected,
        updates_rejected=rejected,
        train_loss=_weighted_mean(losses),
        eval_loss=evaluation["loss"],
        eval_accuracy=evaluation.get("accuracy", float("nan")),
        eval_perplexity=perplexity(evaluation["loss"]),
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        round_wall_s=round_wall_s,
        wall_s=state.wall_s,
    )
    return row, failures


def _fetch(ref: ray.ObjectRef, cid: int, server_round: int) -> ClientResult:
    """The client's result; a dead actor or a lost object becomes a failed result."""
    try:
        result = ray.get(ref, timeout=60)
    except (RayError, GetTimeoutError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ClientResult(client_id=cid, server_round=server_round, error=f"{type(exc).__name__}: {reason}")
    assert result.client_id == cid and result.server_round == server_round, "result routed wrongly"
    return result


def perplexity(loss: float) -> float:
    """exp(mean held-out loss): per token for a language model; NaN when not evaluated."""
    with np.errstate(over="ignore"):
        return float(np.exp(loss))


def _weighted_mean(values: list[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else float("nan")
