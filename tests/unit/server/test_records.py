"""The server's records of its clients: ledger files, contributions, and what resume keeps."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.config import load_config
from fedray.lifecycle.ledger import model_hash, read_round
from fedray.server.context import RoundRecord
from fedray.server.records import RunRecords
from fedray.server.rundir import RunDirectory
from fedray.server.state import ServerState
from fedray.types import ParamSpec

SPEC = ParamSpec(("w", "b"), ((2, 2), (2,)))
TARGET = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)


def evaluate(params):
    """Accuracy rises as the parameters approach TARGET."""
    return {"loss": float(np.linalg.norm(params - TARGET)), "accuracy": 1.0 / (1.0 + np.linalg.norm(params - TARGET))}


def records(tmp_path, *overrides):
    cfg = load_config(None, ["clients.num_clients=4", "server.clients_per_round=3", *overrides])
    return RunRecords(cfg, RunDirectory(tmp_path), SPEC, evaluate)


def play_round(recorder, state, server_round):
    """Clients 0 and 2 move towards TARGET, client 3 away from it."""
    before = state.params.copy()
    accepted = [(0, 10.0, 0.5 * (TARGET - before)), (2, 10.0, 0.4 * (TARGET - before)),
                (3, 5.0, -0.5 * (TARGET - before))]
    accepted = [(c, w, u.astype(np.float32)) for c, w, u in accepted]
    assert recorder.wants_updates(server_round)
    state.params = before + sum(w * u for _, w, u in accepted) / 25.0
    out = recorder.observe(RoundRecord(server_round, before, tuple(accepted), {}), state)
    state.server_round = server_round
    state.metrics.append({"round": server_round, **out})
    return out


def fresh_state():
    return ServerState(server_round=0, params=np.zeros(6, np.float32), transform_state=(), selector_state=(),
                       rng_state={})


def test_ledger_files_hold_each_recorded_round(tmp_path):
    recorder = records(tmp_path, "server.ledger.every=2", "server.ledger.codec=float16")
    state = fresh_state()
    sizes = []
    for r in (1, 2, 3):
        before = state.params.copy()
        if r == 2:
            assert not recorder.wants_updates(2)
            sizes.append(recorder.observe(RoundRecord(2, None, (), {}), state)["ledger_bytes"])
            continue
        sizes.append(play_round(recorder, state, r)["ledger_bytes"])
        stored = read_round(pq.read_table(tmp_path / "ledger" / f"round_00000{r}.parquet"), "x")
        assert stored.clients == (0, 2, 3) and stored.layer_sizes == (4, 2) and stored.codec == "float16"
        assert (stored.base_hash, stored.model_hash) == (model_hash(before), model_hash(state.params))
    files = sorted(p.name for p in (tmp_path / "ledger").iterdir())
    assert files == ["round_000001.parquet", "round_000003.parquet"]
    assert sizes[0] == sizes[1] < sizes[2] == sum(p.stat().st_size for p in (tmp_path / "ledger").iterdir())


def test_contributions_are_written_and_cumulated(tmp_path):
    recorder = records(tmp_path, "server.contribution.name=exact_shapley", "server.contribution.budget=10")
    state = fresh_state()
    for r in (1, 2):
        out = play_round(recorder, state, r)
        assert out["contribution_evaluations"] == 2 ** 3 and "contribution_s" in out
    rows = pq.read_table(tmp_path / "contributions.parquet").to_pylist()
    assert [(row["round"], row["client_id"]) for row in rows] == [(1, 0), (1, 2), (1, 3), (2, 0), (2, 2), (2, 3)]
    for r in (1, 2):
        this = [row for row in rows if row["round"] == r]
        assert sum(row["value"] for row in this) == pytest.approx(this[0]["utility_after"] - this[0]["utility_before"])
    columns = recorder.client_columns(state)
    assert columns["rounds_valued"].tolist() == [2, 0, 2, 2]
    assert np.argmin(columns["contribution"]) == 3 and columns["payout"][3] == 0
    assert columns["payout"].sum() == pytest.approx(10.0)


def test_restore_drops_what_rounds_after_the_checkpoint_wrote(tmp_path):
    recorder = records(tmp_path, "server.ledger.every=1", "server.contribution.name=leave_one_out")
    state = fresh_state()
    for r in (1, 2, 3):
        play_round(recorder, state, r)
        if r == 1:
            checkpoint = ServerState(**{**state.__dict__, "params": state.params.copy(),
                                        "metrics": list(state.metrics), "contributions": list(state.contributions)})
    resumed = records(tmp_path, "server.ledger.every=1", "server.contribution.name=leave_one_out")
    resumed.restore(checkpoint)
    assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == ["round_000001.parquet"]
    assert resumed.ledger_bytes == (tmp_path / "ledger" / "round_000001.parquet").stat().st_size
    assert pq.read_table(tmp_path / "contributions.parquet").to_pydict()["round"] == [1, 1, 1]
    resumed.restore(fresh_state())  # a fresh start in the same directory: nothing of the old run stays
    assert not (tmp_path / "contributions.parquet").exists() and not list((tmp_path / "ledger").iterdir())


def test_nothing_is_recorded_unless_asked(tmp_path):
    recorder = records(tmp_path)
    assert not recorder.active and not recorder.wants_updates(1)
    assert recorder.client_columns(fresh_state()) == {}
