"""summary.json: how far a run got and its last evaluated metrics (torch-free, so the
driver can write it from a checkpoint)."""

from __future__ import annotations

import numpy as np

from fedray.server.state import ServerState


def summarize(state: ServerState, status: str) -> dict:
    """summary.json: how far the run got and the last evaluated metrics."""
    final = {}
    for row in reversed(state.metrics):
        if not np.isnan(row["eval_loss"]):
            final = {"loss": row["eval_loss"], "accuracy": row["eval_accuracy"]}
            if not np.isnan(row["eval_perplexity"]):  # language models only
                final["perplexity"] = row["eval_perplexity"]
            final["round"] = row["round"]
            break
    summary = {
        "status": status,
        "rounds_completed": state.server_round,
        "final_metrics": final,
        "rounds_wall_s": state.wall_s,
        "sim_time_s": state.sim_time_s,
    }
    clients = _federated(state.metrics)
    if clients:  # federated evaluation: the clients' view of the model
        summary["clients_final_metrics"] = clients
    if state.metrics and "dp_epsilon" in state.metrics[-1]:  # client-level DP: the final guarantee
        summary["privacy"] = {"epsilon": state.metrics[-1]["dp_epsilon"], "delta": state.metrics[-1]["dp_delta"]}
    return summary


def _federated(rows: list[dict]) -> dict:
    """The last federated evaluation's means and spread (`fed_*` columns; empty without one)."""
    for row in reversed(rows):
        if not np.isnan(row.get("fed_clients", np.nan)):
            out = {k[len("fed_"):]: v for k, v in row.items() if k.startswith("fed_") and v is not None}
            out["round"] = row["round"]
            return out
    return {}
