"""Federated evaluation: which clients evaluate the global model, and what their metrics add up to.

After a round's commit the server broadcasts the new global parameters (unencoded:
the broadcast codec's state is the training rounds') to a seeded share of the
clients (`server.evaluation.fraction`), each evaluates them, and its personal models
where it has some, on its own held-out rows and returns metrics only
(`fedray.transport.Transport.evaluate`). The rows go to evaluation.parquet (one per
round, client and model); the round's metrics row gets example-weighted means and
the spread across clients: std, worst-10 % and best-10 % means, and the share of
clients below `server.evaluation.threshold`. Evaluation is read-only on the
clients, so a run trains exactly as it would without it; its simulated time is
added to the run's clock.
"""

from __future__ import annotations

import math
import time

import numpy as np

from fedray.config.schema import RunConfig
from fedray.server.context import RoundContext
from fedray.server.state import ServerState
from fedray.transport import EvaluateCall, Transport
from fedray.types import EvaluateInstructions

EVALUATION_FILE = "evaluation.parquet"
TAIL = 0.1
"""The worst and best tails of the spread columns: the 10 % of clients (at least one)."""
_CHOICE = 0xE7A1C
"""Seeds a round's choice of evaluating clients, `[seed, round, _CHOICE]`."""
METRICS = ("loss", "accuracy", "perplexity")


def is_due(cfg: RunConfig, server_round: int, final_round: int) -> bool:
    """Whether clients evaluate after `server_round`: every `server.evaluation.every`
    rounds and after the last."""
    evaluation = cfg.server.evaluation
    return evaluation.on_clients and (server_round % evaluation.every == 0 or server_round == final_round)


def evaluating_clients(cfg: RunConfig, available: np.ndarray, server_round: int) -> np.ndarray:
    """The clients that evaluate after `server_round`, sorted: all available ones, or a
    seeded choice of `ceil(fraction x available)` of them (independent of the selection
    generator, so training selects the same clients with or without evaluation)."""
    fraction = cfg.server.evaluation.fraction
    if fraction == "all" or len(available) == 0:
        return np.asarray(available, dtype=np.int64)
    k = max(1, math.ceil(float(fraction) * len(available)))
    rng = np.random.default_rng([cfg.seed, server_round, _CHOICE])
    return np.sort(rng.choice(available, size=k, replace=False)).astype(np.int64)


def evaluate_on_clients(ctx: RoundContext, state: ServerState, clients: Transport,
                        server_round: int) -> tuple[list[dict], dict[str, float], list[str]]:
    """Run one federated evaluation of the global model in `state`: (evaluation.parquet
    rows, the round's metrics columns, notes). Adds its simulated time to the clock."""
    cfg, started = ctx.cfg, time.perf_counter()
    up = np.zeros(cfg.clients.num_clients, dtype=bool)
    up[clients.available()] = True
    up[cfg.clients.excluded] = False
    chosen = evaluating_clients(cfg, np.flatnonzero(up & ctx.simulation.online(state.sim_time_s)), server_round)
    sends = ctx.exchange.broadcast(state.params, state.merges, chosen.tolist(), clients.put, clients.put)
    calls = [EvaluateCall(EvaluateInstructions(server_round, int(cid), tuple(sends[cid].refs),
                                                  state.client_refs.get(int(cid))), sends[cid])
             for cid in chosen.tolist()]
    timeout_s = cfg.server.round_timeout_s
    deadline = None if timeout_s is None else started + timeout_s
    results = sorted(clients.evaluate(calls, deadline), key=lambda r: r.client_id)
    notes = [f"client {r.client_id} failed to evaluate: {r.error}" for r in results if not r.ok]
    ok = [r for r in results if r.ok]
    # clients evaluate in parallel: the evaluation lasts as long as its slowest client
    sim_s = max((ctx.simulation.evaluation_timing(r.client_id, server_round, r.num_examples, r.wall_s,
                                                  sends[r.client_id].num_bytes).total_s for r in ok), default=0.0)
    state.sim_time_s += sim_s
    rows = [{"round": server_round, "client_id": r.client_id, "model": model, "examples": r.num_examples,
             **{name: float(metrics.get(name, math.nan)) for name in METRICS}}
            for r in ok for model, metrics in r.models.items()]
    columns = summarize_models(rows, cfg.server.evaluation.threshold)
    columns.update({"fed_clients": float(len(ok)), "fed_failed": float(len(results) - len(ok)),
                    "fed_bytes_down": float(sum(sends[c].num_bytes for c in chosen.tolist())),
                    "fed_sim_s": sim_s, "fed_eval_s": time.perf_counter() - started})
    return rows, columns, notes


def summarize_models(rows: list[dict], threshold: float, models: tuple[str, ...] = ("global",)) -> dict[str, float]:
    """metrics.parquet's federated-evaluation columns, per model (`models`, always, and
    any other in `rows`): `fed_<model>_<metric>` example-weighted means (perplexity is
    exp of the mean loss) and the accuracy spread (`spread`). NaN where nothing came in."""
    names = list(models) + sorted({r["model"] for r in rows} - set(models))
    out: dict[str, float] = {}
    for model in names:
        mine = [r for r in rows if r["model"] == model]
        weights = np.array([r["examples"] for r in mine], dtype=np.float64)
        for metric in ("loss", "accuracy"):
            values = np.array([r[metric] for r in mine], dtype=np.float64)
            out[f"fed_{model}_{metric}"] = _weighted(values, weights)
        if any(not math.isnan(r["perplexity"]) for r in mine):
            out[f"fed_{model}_perplexity"] = math.exp(out[f"fed_{model}_loss"]) \
                if out[f"fed_{model}_loss"] < 700 else math.inf
        accuracy = np.array([r["accuracy"] for r in mine], dtype=np.float64)
        out.update({f"fed_{model}_accuracy_{k}": v for k, v in spread(accuracy, threshold).items()})
    return out


def no_evaluation() -> dict[str, float]:
    """The columns of a round in which clients did not evaluate: NaN (every round of a
    run with client evaluation has them)."""
    return {**summarize_models([], math.nan), **dict.fromkeys(("fed_clients", "fed_failed", "fed_bytes_down",
                                                                "fed_sim_s", "fed_eval_s"), math.nan)}


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    keep = ~np.isnan(values)
    total = weights[keep].sum()
    return float((values[keep] * weights[keep]).sum() / total) if total > 0 else math.nan


def spread(values: np.ndarray, threshold: float) -> dict[str, float]:
    """How a metric spreads over clients (each client counts once): `std` (population),
    `worst10` / `best10` (mean of the lowest / highest `TAIL` share, at least one
    client), `below` (share of clients under `threshold`). NaN for no clients."""
    values = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if len(values) == 0:
        return dict.fromkeys(("std", "worst10", "best10", "below"), math.nan)
    tail = max(1, math.ceil(TAIL * len(values)))
    return {"std": float(values.std()), "worst10": float(values[:tail].mean()),
            "best10": float(values[-tail:].mean()), "below": float((values < threshold).mean())}
