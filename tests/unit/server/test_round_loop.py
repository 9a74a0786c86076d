"""The round loop on the in-process transport, without Ray: selection, admission,
validation, typed failures, commit and retries, in sync and async mode."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.compress import build_codecs
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
from fedray.strategy.terms import LocalRound
from fedray.transport.local import LocalTransport
from fedray.client.store import ClientStates, digest
from fedray.types import ClientResult, Context, FailureKind

NUM_CLIENTS, NUM_PARAMS = 8, 5


class ScriptedClients:
    """In-process clients with known answers: client c sends (c + 1) / 100 in every
    coordinate, from c + 1 examples, and counts its committed rounds as its kept state.
    With an `algorithm` whose client chain keeps state (top-k with error feedback), each
    fit instead sends a random update through that chain; with one whose objective terms
    keep state (SCAFFOLD), each fit sends a random delta and the real term's uplink
    payloads, and keeps the term's client state (c_i). `failing` fail their next fit
    with a data error (once each), `bad` send a NaN, `buggy` raise as a bug would."""

    def __init__(self, algorithm=None, failing=(), bad=(), buggy=(), store=None):
        self.algorithm = algorithm
        self.failing, self.bad, self.buggy = set(failing), set(bad), set(buggy)
        self.states = ClientStates(store, range(NUM_CLIENTS), reset_lost=False)
        self.fits: list[tuple[int, int]] = []
        self.commits: list[tuple[int, list[int]]] = []
        self.made: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        """Fit token -> (client, its raw update, what the server decodes of what it sent)."""
        self.committed: list[int] = []
        self.staged = 0
        """Pending states made (one per successful fit)."""

    def fit(self, ins, merges, *payloads) -> ClientResult:
        cid, params = ins.client_id, payloads[0]
        self.fits.append((ins.server_round, cid))
        if cid in self.buggy:
            raise RuntimeError(f"a bug in client {cid}")
        if cid in self.failing:
            self.failing.discard(cid)
            return ClientResult(cid, ins.server_round, error="ValueError: no rows", failure=FailureKind.data)
        if self.algorithm is not None and self.algorithm.terms:
            return self._fit_terms(ins, dict(zip(ins.payloads, payloads)))
        chain = None if self.algorithm is None else self.algorithm.client_transforms
        kept, _ = self.states.get(cid, ins.state, (lambda: chain.init(params)) if chain else (lambda: np.zeros(1)))
        if chain is None:
            update, new = np.full(NUM_PARAMS, (cid + 1) / 100, dtype=np.float32), kept + 1
            payload = update.copy()
        else:
            update = np.random.default_rng(ins.seed).normal(size=NUM_PARAMS).astype(np.float32)
            ctx = Context(ins.server_round, cid, 0)
            payload, new = chain.apply(update, kept, params, ctx)
            self.made[ins.seed] = (cid, update, chain.decode(payload, ctx))
        if cid in self.bad:
            payload = np.full(NUM_PARAMS, np.nan, dtype=np.float32)
        pending = self.states.stage(cid, ins.seed, new, kept)
        self.staged += 1
        return ClientResult(cid, ins.server_round, num_examples=cid + 1, payloads={"delta": payload},
                            train_loss=1.0, pending=pending)

    def _fit_terms(self, ins, named) -> ClientResult:
        """A fit through the real objective terms' client halves, then the client chain (no
        model: the local round's delta and step count are drawn from the fit's seed)."""
        cid, params = ins.client_id, named["params"] if "params" in named else next(iter(named.values()))
        terms, chain = self.algorithm.terms, self.algorithm.client_transforms
        kept, _ = self.states.get(cid, ins.state,
                                  lambda: (*(t.init_client(params) for t in terms), chain.init(params)))
        rng = np.random.default_rng(ins.seed)
        delta = rng.normal(size=NUM_PARAMS).astype(np.float32)
        ctx = Context(ins.server_round, cid, 0)
        local = LocalRound(None, None, params, named, ctx, self.train, delta=delta, steps=int(rng.integers(1, 5)))
        payloads, new = {}, []
        for term, term_state in zip(terms, kept):
            uplink, term_state = term.finish(local, term_state)
            payloads.update(uplink)
            new.append(term_state)
        payloads["delta"], chain_state = chain.apply(delta, kept[-1], params, ctx)
        new.append(chain_state)
        if cid in self.bad:
            payloads["delta"] = np.full(NUM_PARAMS, np.nan, dtype=np.float32)
        pending = self.states.stage(cid, ins.seed, tuple(new), kept)
        self.staged += 1
        return ClientResult(cid, ins.server_round, num_examples=cid + 1, payloads=payloads, train_loss=1.0,
                            pending=pending)

    def stage(self, client_id, message):
        raise AssertionError("no stages in these rounds")

    def commit(self, server_round, committed, spent, keep, retain=None):
        self.commits.append((server_round, sorted(committed)))
        self.committed += list(committed.values())
        return self.states.commit(server_round, committed, spent, keep, retain)


def setup(*overrides, clients=None):
    cfg = load_config(None, [f"clients.num_clients={NUM_CLIENTS}", "server.clients_per_round=4",
                             "server.min_clients=2", "server.max_round_retries=0", *overrides])
    num_examples = np.arange(1, NUM_CLIENTS + 1)
    simulation = build_simulation(cfg, num_examples, 4 * NUM_PARAMS)
    algorithm = build_algorithm(cfg, (), build_codecs(cfg).uplink)
    exchange = build_exchange(cfg, algorithm, NUM_PARAMS, None, None, lambda cid: cid)
    selector = SELECTORS.build(cfg.server.selection.name, cfg.server.selection)
    ctx = RoundContext(cfg, selector, simulation, exchange, STALENESS.build(cfg.server.staleness, cfg.server),
                       np.random.default_rng(0), lambda state: {})
    params = np.zeros(NUM_PARAMS, dtype=np.float32)
    state = ServerState(0, params, algorithm.server_transforms.init(params), selector.init(NUM_CLIENTS),
                        ctx.rng.bit_generator.state, exchange.aggregator.init(),
                        term_states=tuple(t.init_server(params) for t in algorithm.terms),
                        profiles=initial_profiles(simulation, num_examples))
    clients = clients or ScriptedClients()
    if clients.algorithm is None and (algorithm.terms or any(o.startswith("clients.codec") for o in overrides)):
        clients.algorithm = algorithm
    clients.train = cfg.train
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
    assert clients.commits == [(1, [])] and clients.states.current == {} and clients.states.pending == {}
    assert state.client_refs == {}


def test_too_few_successes_retry_the_round():
    ctx, algorithm, state, transport, clients = setup("server.max_round_retries=1", "server.clients_per_round=8",
                                                      "server.min_clients=3", clients=ScriptedClients(failing=range(6)))
    row, notes = run_attempts(run_round, ctx, algorithm, state, transport, 1)
    assert row is not None and row.attempts == 2 and row.clients_failed == 0  # each fails its first fit only
    assert sum("2 of 8 client(s) succeeded, fewer than server.min_clients=3" in n for n in notes) == 1
    assert clients.commits == [(1, []), (1, list(range(8)))]  # the failed attempt committed nothing
    assert {c: r.server_round for c, r in state.client_refs.items()} == {c: 1 for c in range(8)}
    assert all(clients.states.current[c][1][0] == 1 for c in range(8))  # counted once


def test_every_attempt_short_leaves_the_model_and_commits_nothing():
    class AlwaysFailing(ScriptedClients):
        def fit(self, ins, merges, *payloads):
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


def assert_error_feedback_conserved(clients: ScriptedClients, state: ServerState) -> int:
    """Per client, the sum of what its committed updates sent plus its residual is the sum
    of those updates (Σ sent + residual == Σ update), and the server's digest names
    that residual; how many clients were checked."""
    checked = 0
    for cid in range(NUM_CLIENTS):
        tokens = [t for t in clients.committed if clients.made[t][0] == cid]
        if not tokens:
            assert cid not in state.client_refs
            continue
        ref, residual = clients.states.current[cid]
        assert state.client_refs[cid] == ref and ref.digest == digest(residual)
        sent = np.sum([clients.made[t][2] for t in tokens], axis=0)
        raw = np.sum([clients.made[t][1] for t in tokens], axis=0)
        np.testing.assert_allclose(sent + residual[0], raw, atol=1e-5)
        checked += 1
    return checked


TOP_K = "clients.codec={name: top_k, args: {fraction: 0.4}}"


@pytest.mark.parametrize("case", ["rejected", "late", "failed_attempt"])
def test_error_feedback_is_conserved_whatever_becomes_of_an_update(case):
    overrides = {"rejected": ["server.clients_per_round=8"],
                 "late": ["server.selection.name=deadline", "server.selection.deadline.overcommit=1.0"],
                 "failed_attempt": ["server.clients_per_round=8", "server.min_clients=3",
                                    "server.max_round_retries=1"]}[case]
    ctx, algorithm, state, transport, clients = setup(TOP_K, *overrides)
    rejected = late = short = 0
    for server_round in range(1, 6):
        clients.bad = {server_round % NUM_CLIENTS} if case == "rejected" else set()
        clients.failing = set(range(6)) if case == "failed_attempt" else set()
        row, notes = run_attempts(run_round, ctx, algorithm, state, transport, server_round)
        rejected += row.updates_rejected
        late += row.clients_late
        short += row.attempts - 1
    assert {"rejected": rejected, "late": late, "failed_attempt": short}[case] >= 5  # the case happened
    # the updates that were not aggregated made pending states, and none became current
    assert clients.staged > len(clients.committed)
    assert assert_error_feedback_conserved(clients, state) >= 4


def test_error_feedback_is_conserved_with_stale_updates_in_async_mode():
    ctx, algorithm, state, transport, clients = setup(TOP_K, "server.mode=async", "server.clients_per_round=6",
                                                      "server.buffer_size=2", "server.min_clients=1",
                                                      "server.max_staleness=0")
    dropped = 0
    for server_round in range(1, 8):
        row, _ = run_buffered_round(ctx, algorithm, state, transport, server_round, 1)
        dropped += row.clients_late
    assert dropped > 0  # too stale: dropped, their pending states too
    assert assert_error_feedback_conserved(clients, state) >= 4
    in_flight = {f.client_id: f.result.pending.token for f in state.in_flight}
    assert {c: p.token for c, p in clients.states.pending.items()} == in_flight  # kept pending, the rest gone


def assert_control_variates_agree(clients: ScriptedClients, state: ServerState) -> int:
    """SCAFFOLD's c == (1/N) Σ_i c_i over all N clients (c_i = 0 for a client with no
    committed state): the server adds (|S|/N) x the unweighted mean of the aggregated
    control deltas, so this holds exactly when the committed c_i are those whose deltas
    were aggregated. The server's refs name each client's c_i; how many c_i there are."""
    total = np.zeros(NUM_PARAMS, dtype=np.float64)
    for cid, (ref, kept) in clients.states.current.items():
        assert state.client_refs[cid] == ref and ref.digest == digest(kept)
        total += kept[0]
    assert set(state.client_refs) == set(clients.states.current)
    np.testing.assert_allclose(state.term_states[0], total / NUM_CLIENTS, atol=1e-5)
    return len(clients.states.current)


SCAFFOLD = "server.strategy.name=scaffold"


@pytest.mark.parametrize("case", ["rejected", "late", "failed_attempt"])
def test_scaffold_server_control_is_the_mean_of_committed_client_controls_whatever_becomes_of_an_update(case):
    overrides = {"rejected": ["server.clients_per_round=8"],
                 "late": ["server.selection.name=deadline", "server.selection.deadline.overcommit=1.0"],
                 "failed_attempt": ["server.clients_per_round=8", "server.min_clients=3",
                                    "server.max_round_retries=1"]}[case]
    ctx, algorithm, state, transport, clients = setup(SCAFFOLD, *overrides)
    happened = 0
    for server_round in range(1, 6):
        clients.bad = {server_round % NUM_CLIENTS} if case == "rejected" else set()
        clients.failing = set(range(6)) if case == "failed_attempt" else set()
        row, _ = run_attempts(run_round, ctx, algorithm, state, transport, server_round)
        happened += {"rejected": row.updates_rejected, "late": row.clients_late,
                     "failed_attempt": row.attempts - 1}[case]
        assert_control_variates_agree(clients, state)
    assert happened >= 5 and clients.staged > len(clients.committed)  # the case happened
    assert np.abs(state.term_states[0]).max() > 0.01  # c moved
    assert assert_control_variates_agree(clients, state) >= 4


def test_scaffold_server_control_is_the_mean_of_committed_client_controls_with_stale_updates_in_async_mode():
    ctx, algorithm, state, transport, clients = setup(SCAFFOLD, "server.mode=async", "server.clients_per_round=6",
                                                      "server.buffer_size=2", "server.min_clients=1",
                                                      "server.max_staleness=0")
    dropped = 0
    for server_round in range(1, 8):
        row, _ = run_buffered_round(ctx, algorithm, state, transport, server_round, 1)
        dropped += row.clients_late
        assert_control_variates_agree(clients, state)
    assert dropped > 0 and np.abs(state.term_states[0]).max() > 0.01
    assert assert_control_variates_agree(clients, state) >= 4


def test_client_state_files_are_pruned_to_what_the_retained_checkpoints_name_and_resume_is_exact(tmp_path):
    """Each commit deletes the store files that neither the current state nor any of the
    newest `server.keep_checkpoints` checkpoints names; a resume from the oldest one left,
    with fresh clients reading the pruned store, ends where the uninterrupted run ends."""
    from fedray.client.store import StateCodec, StateStore
    from fedray.server.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
    from fedray.server.loop import record_store_rounds, retained_rounds
    from fedray.server.serialize import decode, encode

    def store():
        return StateStore(str(tmp_path / "clients"), 0, StateCodec(encode, decode))

    overrides = (TOP_K, "server.clients_per_round=3", "server.keep_checkpoints=3")
    ctx, algorithm, state, transport, clients = setup(*overrides, clients=ScriptedClients(store=store()))
    rounds = 8
    for server_round in range(1, rounds + 1):
        retain = retained_rounds(state, server_round)  # what the round's commit will name
        run_attempts(run_round, ctx, algorithm, state, transport, server_round)
        state.rng_state = ctx.rng.bit_generator.state
        record_store_rounds(state, 3)
        save_checkpoint(tmp_path / "checkpoints", state, keep=3)
        on_disk = store().rounds()
        assert set(on_disk) <= retain and server_round in on_disk
        for path in list_checkpoints(tmp_path / "checkpoints"):  # every retained checkpoint's states readable
            for cid, ref in load_checkpoint(path).client_refs.items():
                assert ref.server_round in on_disk
                assert digest(store().committed(cid, ref)) == ref.digest
    assert len(on_disk) < rounds  # files were deleted
    assert set(state.store_rounds) == {rounds - 2, rounds - 1, rounds}

    oldest = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])
    ctx, algorithm, _, transport, _ = setup(*overrides, clients=ScriptedClients(store=store()))
    ctx.rng.bit_generator.state = oldest.rng_state
    for server_round in range(oldest.server_round + 1, rounds + 1):
        run_attempts(run_round, ctx, algorithm, oldest, transport, server_round)
    np.testing.assert_array_equal(oldest.params, state.params)
    assert oldest.client_refs == state.client_refs


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rounds_after_a_checkpoint_restored_in_a_fresh_setup_give_the_same_bytes(tmp_path, mode):
    """Everything a round changes between rounds is in ServerState: two rounds, a
    checkpoint, a fresh context, transport and clients (reading the clients' store), two
    more rounds: the final state's content (its checkpoint's SHA-256) is the
    uninterrupted run's, wall time aside."""
    import dataclasses

    from fedray.client.store import StateCodec, StateStore
    from fedray.server.checkpoint import load_checkpoint, save_checkpoint
    from fedray.server.serialize import decode, encode

    overrides = [SCAFFOLD, TOP_K, "server.clients_per_round=4"]
    if mode == "async":
        overrides += ["server.mode=async", "server.buffer_size=2", "server.min_clients=1"]
    step = run_buffered_round if mode == "async" else run_round

    def fresh(where):
        clients = ScriptedClients(store=StateStore(str(where), 0, StateCodec(encode, decode)))
        return setup(*overrides, clients=clients)

    def rounds(ctx, algorithm, state, transport, numbers):
        for server_round in numbers:
            run_attempts(step, ctx, algorithm, state, transport, server_round)
        state.rng_state = ctx.rng.bit_generator.state
        return dataclasses.replace(state, wall_s=0.0)

    ctx, algorithm, state, transport, _ = fresh(tmp_path / "a")
    uninterrupted = rounds(ctx, algorithm, state, transport, range(1, 5))
    ctx, algorithm, state, transport, _ = fresh(tmp_path / "b")
    path = save_checkpoint(tmp_path / "checkpoints", rounds(ctx, algorithm, state, transport, (1, 2)), keep=1)
    ctx, algorithm, _, transport, _ = fresh(tmp_path / "b")
    restored = load_checkpoint(path)
    ctx.rng.bit_generator.state = restored.rng_state
    resumed = rounds(ctx, algorithm, restored, transport, (3, 4))
    assert resumed.server_round == 4 and resumed.client_refs
    assert content_sha256(resumed) == content_sha256(uninterrupted)


def content_sha256(state: ServerState) -> str:
    """The SHA-256 a checkpoint of `state` is signed with: of its JSON document and every
    tensor's bytes (the file's own bytes also vary with the order safetensors writes its
    metadata in)."""
    import json
    import struct

    from fedray.server.serialize import encode

    data = encode(state)
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size])["__metadata__"]["fedray_sha256"]
