"""Federated evaluation on the server's side: the spread statistics against numpy by hand,
the seeded choice of evaluating clients, and whole rounds on the in-process transport
(evaluation.parquet's rows, failures as notes, and training unchanged by evaluating)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedray.config import load_config
from fedray.server.federated_eval import evaluating_clients, is_due, spread, summarize_models
from fedray.server.loop import run_round
from fedray.types import EvaluateResult, FailureKind
from tests.unit.server.test_round_loop import NUM_CLIENTS, ScriptedClients, setup

EVAL = ["data.client_test_fraction=0.2", "server.evaluation.where=clients"]


def test_spread_matches_numpy_by_hand():
    accuracy = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.6, 0.2, 0.4, 0.95, 0.05, 0.65])
    out = spread(accuracy, threshold=0.45)
    ordered = np.sort(accuracy)  # 12 clients: the 10 % tails are ceil(1.2) = 2 clients each
    assert out["std"] == pytest.approx(np.sqrt(((accuracy - accuracy.mean()) ** 2).mean()))
    assert out["worst10"] == pytest.approx((0.05 + 0.1) / 2) == pytest.approx(ordered[:2].mean())
    assert out["best10"] == pytest.approx((0.9 + 0.95) / 2)
    assert out["below"] == pytest.approx(5 / 12)  # 0.05, 0.1, 0.2, 0.3, 0.4
    single = spread(np.array([0.4]), 0.5)
    assert (single["std"], single["worst10"], single["best10"], single["below"]) == (0.0, 0.4, 0.4, 1.0)
    assert all(math.isnan(v) for v in spread(np.array([]), 0.5).values())


def test_means_are_weighted_by_examples_and_each_model_gets_its_columns():
    rows = [{"client_id": c, "model": m, "examples": n, "loss": loss, "accuracy": acc, "perplexity": math.nan}
            for c, n, loss, acc in [(0, 10, 1.0, 0.2), (1, 30, 2.0, 0.6)]
            for m in ("global", "personal")]
    rows[-1] = {**rows[-1], "accuracy": 0.9}  # client 1's personal model
    out = summarize_models(rows, threshold=0.5)
    assert out["fed_global_loss"] == pytest.approx((10 * 1.0 + 30 * 2.0) / 40)
    assert out["fed_global_accuracy"] == pytest.approx((10 * 0.2 + 30 * 0.6) / 40)
    assert out["fed_personal_accuracy"] == pytest.approx((10 * 0.2 + 30 * 0.9) / 40)
    assert out["fed_global_accuracy_worst10"] == pytest.approx(0.2) and out["fed_personal_accuracy_best10"] == 0.9
    assert out["fed_global_accuracy_below"] == 0.5 and "fed_global_perplexity" not in out
    empty = summarize_models([], 0.5)
    assert set(empty) == {k for k in out if k.startswith("fed_global")} and all(math.isnan(v) for v in empty.values())


def test_the_evaluating_clients_are_a_seeded_share_of_those_available():
    cfg = load_config(None, [*EVAL, "clients.num_clients=20", "server.evaluation.fraction=0.25"])
    available = np.arange(20)
    chosen = evaluating_clients(cfg, available, 3)
    assert len(chosen) == 5 and len(set(chosen)) == 5 and (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(chosen, evaluating_clients(cfg, available, 3))
    assert not np.array_equal(chosen, evaluating_clients(cfg, available, 4))
    whole = load_config(None, [*EVAL, "clients.num_clients=20"])
    np.testing.assert_array_equal(evaluating_clients(whole, available[::2], 3), available[::2])
    every = load_config(None, [*EVAL, "server.evaluation.every=2", "server.rounds=5"])
    assert [r for r in range(1, 6) if is_due(every, r, 5)] == [2, 4, 5]


class EvaluatingClients(ScriptedClients):
    """Scripted clients that also evaluate: client c reports accuracy c / 10 on c + 1 rows
    (`failing_eval` fail with a data error); every evaluation is recorded."""

    def __init__(self, failing_eval=(), **kwargs):
        super().__init__(**kwargs)
        self.failing_eval, self.evaluated = set(failing_eval), []

    def evaluate(self, ins, merges, *payloads):
        cid = ins.client_id
        self.evaluated.append((ins.server_round, cid, float(payloads[0][0])))
        if cid in self.failing_eval:
            return EvaluateResult(cid, ins.server_round, error="ValueError: no held-out rows",
                                  failure=FailureKind.data)
        return EvaluateResult(cid, ins.server_round, num_examples=cid + 1,
                              models={"global": {"loss": 1.0, "accuracy": cid / 10}})


def run_rounds(*overrides, clients=None, rounds=3):
    ctx, algorithm, state, transport, clients = setup(*overrides, f"server.rounds={rounds}", clients=clients)
    rows = [run_round(ctx, algorithm, state, transport, r, 1) for r in range(1, rounds + 1)]
    return state, rows, clients


def test_clients_evaluate_the_new_global_model_and_their_rows_are_recorded():
    state, rows, clients = run_rounds(*EVAL, "server.evaluation.fraction=0.5", clients=EvaluatingClients())
    assert all(row is not None for row, _ in rows)
    per_round = {r: sorted(c for rr, c, _ in clients.evaluated if rr == r) for r in (1, 2, 3)}
    assert all(len(ids) == NUM_CLIENTS // 2 for ids in per_round.values())
    assert [(e["round"], e["client_id"], e["model"]) for e in state.evaluations] == \
        [(r, c, "global") for r in (1, 2, 3) for c in per_round[r]]
    assert clients.evaluated[-1][2] == pytest.approx(state.params[0])  # the model after the last round
    last = rows[-1][0].metrics
    ids = per_round[3]
    assert last["fed_global_accuracy"] == pytest.approx(sum((c + 1) * c / 10 for c in ids) / sum(c + 1 for c in ids))
    assert last["fed_global_accuracy_worst10"] == pytest.approx(min(ids) / 10) and last["fed_clients"] == len(ids)
    assert last["fed_sim_s"] > 0 and rows[-1][0].sim_time_s == pytest.approx(state.sim_time_s)
    assert last["fed_bytes_down"] == len(ids) * state.params.nbytes  # the model, to each evaluating client


def test_a_failed_evaluation_is_a_note_and_the_round_stands():
    state, rows, _ = run_rounds(*EVAL, clients=EvaluatingClients(failing_eval=[2]), rounds=1)
    row, notes = rows[0]
    assert row is not None and row.metrics["fed_failed"] == 1 and row.metrics["fed_clients"] == NUM_CLIENTS - 1
    assert "client 2 failed to evaluate: ValueError: no held-out rows" in notes
    assert 2 not in {e["client_id"] for e in state.evaluations}


def test_evaluating_changes_nothing_the_rounds_train():
    base = ["data.client_test_fraction=0.2", "server.evaluation.every=2"]
    with_eval, rows_eval, _ = run_rounds(*base, "server.evaluation.where=both", clients=EvaluatingClients())
    without, rows_plain, _ = run_rounds(*base, "server.evaluation.where=server", clients=EvaluatingClients())
    np.testing.assert_array_equal(with_eval.params, without.params)
    assert [r.clients for r, _ in rows_eval] == [r.clients for r, _ in rows_plain]
    assert math.isnan(rows_eval[0][0].metrics["fed_global_accuracy"])  # round 1 is not due
    assert not math.isnan(rows_eval[1][0].metrics["fed_global_accuracy"])
