"""The round loop on the in-process transport, without Ray: selection, admission,
validation, typed failures, commit and retries, in sync and async mode."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.config import load_config
from fedray.hetero.simulation import build_simulation
from fedray.selection import SELECTORS
from fedray.server.actor import initial_profiles
from fedray.server.buffered import run_buffered_round
from fedray.server.context import RoundContext
from fedray.server.loop import run_attempts, run_round
from fedray.server.state import ServerState
from fedray.strategy.algorithm import build_algorithm
from fedray.strategy.lora import build_exchange
from fedray.strategy.staleness import STALENESS
from fedray.transport.local import LocalTransport
from fedray.types import ClientResult, FailureKind

NUM_CLIENTS, NUM_PARAMS = 8, 5


class ScriptedClients:
    """In-process clients with known answers: client c sends (c + 1) / 100 in every
    coordinate, from c + 1 examples. `failing` fail their next fit with a data error
    (once each), `bad` send a NaN, `buggy` raise as a bug would."""

    def __init__(self, failing=(), bad=(), buggy=()):
        self.failing, self.bad, self.buggy = set(failing), set(bad), set(buggy)
        self.fits: list[tuple[int, int]] = []
        self.commits: list[tuple[int, list[int]]] = []

    def fit(self, ins, state, merges, *payloads) -> ClientResult:
        cid = ins.client_id
        self.fits.append((ins.server_round, cid))
        if cid in self.buggy:
            raise RuntimeError(f"a bug in client {cid}")
        if cid in self.failing:
            self.failing.discard(cid)
            return ClientResult(cid, ins.server_round, error="ValueError: no rows", failure=FailureKind.data)
        update = np.full(NUM_PARAMS, (cid + 1) / 100, dtype=np.float32)
        if cid in self.bad:
            update[0] = np.nan
        return ClientResult(cid, ins.server_round, num_examples=cid + 1, payloads={"delta": update}, train_loss=1.0)

    def stage(self, client_id, message):
        raise AssertionError("no stages in these rounds")

    def commit(self, server_round, committed):
        self.commits.append((server_round, list(committed)))


def setup(*overrides, clients=None):
    cfg = load_config(None, [f"clients.num_clients={NUM_CLIENTS}", "server.clients_per_round=4",
                             "server.min_clients=2", "server.max_round_retries=0", *overrides])
    num_examples = np.arange(1, NUM_CLIENTS + 1)
    simulation = build_simulation(cfg, num_examples, 4 * NUM_PARAMS)
    algorithm = build_algorithm(cfg)
    exchange = build_exchange(cfg, algorithm, NUM_PARAMS, None, None, lambda cid: cid)
    selector = SELECTORS.build(cfg.server.selection.name, cfg.server.selection)
    ctx = RoundContext(cfg, selector, simulation, exchange, STALENESS.build(cfg.server.staleness, cfg.server),
                       np.random.default_rng(0), lambda state: {})
    params = np.zeros(NUM_PARAMS, dtype=np.float32)
    state = ServerState(0, params, algorithm.server_transforms.init(params), selector.init(NUM_CLIENTS),
                        ctx.rng.bit_generator.state, exchange.aggregator.init(),
                        profiles=initial_profiles(simulation, num_examples))
    clients = clients or ScriptedClients()
    transport = LocalTransport([clients], lambda cid: 0, NUM_CLIENTS)
    return ctx, algorithm, state, transport, clients


def fedavg_of(cids) -> np.ndarray:
    """The example-weighted mean of the scripted clients' updates, by hand."""
    n = np.array([c + 1 for c in cids], dtype=np.float64)
    return np.full(NUM_PARAMS, (n * n / 100).sum() / n.sum())


def test_a_round_selects_broadcasts_once_and_steps_by_the_weighted_mean():
    ctx, algorithm, state, transport, clients = setup()
    row, notes = run_round(ctx, algorithm, state, transport, 1, 1)
    assert row is not None and notes == []
    assert len(row.clients) == 4 == len(set(row.clients)) and row.clients_failed == 0
    assert sorted(c for _, c in clients.fits) == sorted(row.clients)
    assert transport.puts == 1  # the parameters, once for every client
    np.testing.assert_allclose(state.params, fedavg_of(row.clients), rtol=1e-6)
    assert state.server_round == 1 and clients.commits == [(1, sorted(row.clients))]


def test_clients_that_cannot_be_reached_are_never_selected():
    ctx, algorithm, state, transport, clients = setup()
    transport.down = {0, 1, 2, 3}
    for server_round in (1, 2, 3):
        row, _ = run_round(ctx, algorithm, state, transport, server_round, 1)
        assert set(row.clients) == {4, 5, 6, 7}


def test_a_bad_update_is_rejected_and_never_reaches_the_model():
    ctx, algorithm, state, transport, clients = setup("server.clients_per_round=8", clients=ScriptedClients(bad={3}))
    row, notes = run_round(ctx, algorithm, state, transport, 1, 1)
    assert row.updates_rejected == 1 and 3 not in row.clients
    assert any(n.startswith("client 3 update rejected") for n in notes)
    np.testing.assert_allclose(state.params, fedavg_of([c for c in range(8) if c != 3]), rtol=1e-6)
    assert clients.commits == [(1, [c for c in range(8) if c != 3])]


def test_a_failed_client_is_a_typed_result_counted_once():
    ctx, algorithm, state, transport, clients = setup("server.clients_per_round=8",
                                                      clients=ScriptedClients(failing={2, 5}))
    row, notes = run_round(ctx, algorithm, state, transport, 1, 1)
    assert row.clients_failed == 2 and set(row.clients) == set(range(8)) - {2, 5}
    assert "client 2 failed: ValueError: no rows" in notes
    assert state.profiles.consecutive_failures[[2, 5]].tolist() == [1, 1]


def test_calls_past_the_timeout_fail_as_timeouts_and_the_rest_count():
    ctx, algorithm, state, transport, clients = setup("server.clients_per_round=8", "server.round_timeout_s=30")
    transport.late = {1, 6}
    row, notes = run_round(ctx, algorithm, state, transport, 1, 1)
    assert row.clients_failed == 2 and set(row.clients) == set(range(8)) - {1, 6}
    assert "client 1 timed out after 30.0 s" in notes


def test_results_past_the_simulated_deadline_are_late_and_not_committed():
    ctx, algorithm, state, transport, clients = setup("server.clients_per_round=8", "server.deadline_s=1e-9",
                                                      "server.min_clients=1")
    params = state.params.copy()
    row, notes = run_round(ctx, algorithm, state, transport, 1, 1)
    assert row is None and sum("was late" in n for n in notes) == 8
    np.testing.assert_array_equal(state.params, params)
    assert clients.commits == []


def test_too_few_successes_retry_the_round():
    ctx, algorithm, state, transport, clients = setup("server.max_round_retries=1", "server.clients_per_round=8",
                                                      "server.min_clients=3", clients=ScriptedClients(failing=range(6)))
    row, notes = run_attempts(run_round, ctx, algorithm, state, transport, 1)
    assert row is not None and row.attempts == 2 and row.clients_failed == 0  # each fails its first fit only
    assert sum("2 of 8 client(s) succeeded, fewer than server.min_clients=3" in n for n in notes) == 1
    assert clients.commits == [(1, list(range(8)))]  # the failed attempt committed nothing


def test_every_attempt_short_leaves_the_model_and_commits_nothing():
    class AlwaysFailing(ScriptedClients):
        def fit(self, ins, state, merges, *payloads):
            return ClientResult(ins.client_id, ins.server_round, error="OSError: disk", failure=FailureKind.data)

    ctx, algorithm, state, transport, clients = setup("server.max_round_retries=2", clients=AlwaysFailing())
    row, notes = run_attempts(run_round, ctx, algorithm, state, transport, 1)
    assert row is None and notes[-1].startswith("round 1 fell short of server.min_clients=2 in 3 attempt(s)")
    np.testing.assert_array_equal(state.params, np.zeros(NUM_PARAMS))
    assert clients.commits == [] and state.server_round == 0


def test_a_bug_on_a_client_stops_the_round():
    ctx, algorithm, state, transport, clients = setup("server.clients_per_round=8", clients=ScriptedClients(buggy={4}))
    with pytest.raises(RuntimeError, match="a bug in client 4"):
        run_round(ctx, algorithm, state, transport, 1, 1)


def test_async_steps_run_on_the_same_transport_and_commit_what_they_apply():
    ctx, algorithm, state, transport, clients = setup("server.mode=async", "server.clients_per_round=4",
                                                      "server.buffer_size=2", "server.min_clients=1")
    applied = []
    for server_round in (1, 2, 3):
        row, _ = run_buffered_round(ctx, algorithm, state, transport, server_round, 1)
        assert len(row.clients) == 2
        applied.append(sorted(row.clients))
    assert [c for _, c in clients.commits] == applied
    assert len(state.in_flight) == 2  # trained, not yet taken: pending, not committed
