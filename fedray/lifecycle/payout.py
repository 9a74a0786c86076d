"""The incentive payout: a budget shared in proportion to each client's non-negative contribution.

Cumulative contributions are the sums of a client's per-round values
(contributions.parquet). A client whose cumulative value is negative (its updates
hurt the model on balance) or zero gets nothing; the others share the budget in
proportion to their values, so the payouts add up to the budget whenever anyone
contributed. Shapley values make this fair in the cooperative-game sense:
symmetric clients are paid alike, and a client that adds nothing is paid nothing.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def payouts(contributions: np.ndarray, budget: float) -> np.ndarray:
    """Each client's share of `budget`, proportional to max(contribution, 0)."""
    positive = np.clip(np.nan_to_num(np.asarray(contributions, np.float64)), 0.0, None)
    total = positive.sum()
    return budget * positive / total if total > 0 else np.zeros_like(positive)


def cumulative(rows: Sequence[dict[str, Any]], num_clients: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of values, rounds valued) per client id, from contributions rows."""
    total, rounds = np.zeros(num_clients), np.zeros(num_clients, dtype=np.int64)
    for row in rows:
        total[row["client_id"]] += row["value"]
        rounds[row["client_id"]] += 1
    return total, rounds


def client_columns(rows: Sequence[dict[str, Any]], num_clients: int, budget: float) -> dict[str, np.ndarray]:
    """clients.parquet's contribution columns, indexed by client id."""
    total, rounds = cumulative(rows, num_clients)
    columns = {"contribution": total, "rounds_valued": rounds}
    if budget > 0:
        columns["payout"] = payouts(total, budget)
    return columns


def payout_table(client_ids: Sequence[int], contributions: Sequence[float], budget: float) -> str:
    """Markdown: client, cumulative contribution, payout and share, highest contribution first."""
    pay = payouts(np.asarray(contributions, np.float64), budget)
    order = sorted(range(len(client_ids)), key=lambda i: (-contributions[i], client_ids[i]))
    lines = ["| client | contribution | payout | share |", "|---|---|---|---|"]
    for i in order:
        share = pay[i] / budget if budget > 0 else 0.0
        lines.append(f"| {client_ids[i]} | {contributions[i]:.4f} | {pay[i]:.2f} | {share:.1%} |")
    return "\n".join(lines) + "\n"
