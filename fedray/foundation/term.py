"""Knowledge transfer between the foundation model and the clients, as an objective term.

server -> clients: the foundation model's top-k distribution on the public inputs
travels as the `teacher` payload (`TopK`: log-probabilities at the KD temperature
and their indices, per class row or per token position); each client adds
weight x KD towards it on random public minibatches to its local objective, at the
positions its task counts (real tokens only for causal LMs). A generated public set
that is refreshed during the run travels as the `public` payload (token rows) in
the rounds it is current; otherwise clients keep the set their actor loaded.
clients -> server: each client returns its own top-k on the public inputs as
`public_logits`; the server collects them (weighted by examples) and distils their
mean over the union of supports into the sharded model (`Distiller.absorb`),
reporting `kd_loss`. Both payloads are counted in the round's bytes like any other.

The server half needs the `Distiller`; the client half needs the public inputs,
which the client actor prepares once (`fedray.foundation.distill.public_tensor`),
and the task's name, which says how a model reads them (`fedray.foundation.public`).
"""

from __future__ import annotations

from typing import Any

from fedray.config.schema import DistillConfig, RunConfig
from fedray.foundation.distill import TopK, kd_regularizer, public_logits, public_tensor
from fedray.strategy.terms import LocalRound, Term
from fedray.types import ClientId


class Collected:
    """Keeps each client's payload with its weight: the top-k supports of different
    clients differ, so they are merged only at the end (`aggregate_top_k`)."""

    def __init__(self) -> None:
        self.reset()

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self.items: list[tuple[TopK, float]] = []
        self.num_added = 0

    def add(self, client_id: ClientId, weight: float, payload: TopK) -> None:
        self.items.append((payload, float(weight)))
        self.num_added += 1

    def result(self) -> tuple[Any, Any]:
        return ([p for p, _ in self.items], [w for _, w in self.items]), ()


def _public(local: LocalRound, task: str) -> Any:
    """The round's public inputs: a refreshed set from the broadcast, else the actor's."""
    fresh = local.payloads.get("public")
    if fresh is None or local.public is None:
        return local.public
    return public_tensor(task, fresh, local.public.device)


def knowledge_transfer(cfg: DistillConfig, task: str, distiller: Any = None) -> Term:
    """Both directions of `server.distill` for a `task` (`DataInfo.task`: `classification`,
    `causal_lm`); `distiller` on the server, None on clients."""

    def objective(local: LocalRound, state: Any):
        teacher = local.payloads.get("teacher")
        public = _public(local, task)
        if teacher is None or public is None or cfg.weight == 0:
            return None
        return kd_regularizer(task, public, teacher, cfg.weight, cfg.temperature, local.train.batch_size,
                              cfg.rest_mass)

    def finish(local: LocalRound, state: Any):
        public = _public(local, task)
        if public is None or not cfg.client_to_server:
            return {}, state
        return {"public_logits": public_logits(local.model, task, public, cfg.top_k, cfg.temperature)}, state

    def downlink(state: Any, ctx) -> dict:
        if distiller is None:
            return {}
        sent = {"teacher": distiller.teacher(), "public": distiller.refreshed_public()}
        return {name: value for name, value in sent.items() if value is not None}

    def reducers(num_params: int) -> dict:
        return {"public_logits": Collected()} if cfg.client_to_server else {}

    def absorb(state: Any, combined: dict, ctx):
        logits, weights = combined.get("public_logits", ([], []))
        if distiller is None or not logits:
            return state, {}
        return state, {"kd_loss": distiller.absorb(logits, weights)}

    return Term(objective=objective, finish=finish, downlink=downlink, reducers=reducers, absorb=absorb)


def client_terms(cfg: RunConfig, task: str) -> tuple[Term, ...]:
    """The knowledge-transfer term as the clients run it, when `server.distill` is on."""
    return (knowledge_transfer(cfg.server.distill, task),) if cfg.server.distill.enabled else ()
