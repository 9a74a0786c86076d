"""Knowledge transfer between the foundation model and the clients, as an objective term.

server -> clients: the foundation model's top-k logits on the public inputs travel
as the `teacher` payload; each client adds weight x KD towards them on random
public minibatches to its local objective. clients -> server: each client returns
its own top-k logits on the public inputs as `public_logits`; the server collects
them (weighted by examples) and distils their mean into the sharded model
(`Distiller.absorb`), reporting `kd_loss`. The server half needs the `Distiller`;
the client half needs the public inputs, which the client actor prepares once.
"""

from __future__ import annotations

from typing import Any

from fedray.config.schema import DistillConfig, RunConfig
from fedray.foundation.distill import TopK, kd_regularizer, top_k
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


def knowledge_transfer(cfg: DistillConfig, distiller: Any = None) -> Term:
    """Both directions of `server.distill`; `distiller` on the server, None on clients."""

    def objective(local: LocalRound, state: Any):
        teacher = local.payloads.get("teacher")
        if teacher is None or local.public is None or cfg.weight == 0:
            return None
        return kd_regularizer(local.public, teacher, cfg.weight, cfg.temperature, local.train.batch_size)

    def finish(local: LocalRound, state: Any):
        if local.public is None or not cfg.client_to_server:
            return {}, state
        import torch

        local.model.eval()
        with torch.no_grad():
            out = local.model(local.public)
        logits = getattr(out, "logits", out).float().to("cpu").numpy()
        return {"public_logits": top_k(logits, cfg.top_k)}, state

    def downlink(state: Any, ctx) -> dict:
        teacher = distiller.teacher() if distiller is not None else None
        return {} if teacher is None else {"teacher": teacher}

    def reducers(num_params: int) -> dict:
        return {"public_logits": Collected()} if cfg.client_to_server else {}

    def absorb(state: Any, combined: dict, ctx):
        logits, weights = combined.get("public_logits", ([], []))
        if distiller is None or not logits:
            return state, {}
        return state, {"kd_loss": distiller.absorb(logits, weights)}

    return Term(objective=objective, finish=finish, downlink=downlink, reducers=reducers, absorb=absorb)


def client_terms(cfg: RunConfig) -> tuple[Term, ...]:
    """The knowledge-transfer term as the clients run it, when `server.distill` is on."""
    return (knowledge_transfer(cfg.server.distill),) if cfg.server.distill.enabled else ()


