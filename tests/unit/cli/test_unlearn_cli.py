"""`fedray unlearn`'s checks before anything runs: exit status 2, one clear message, nothing written."""

import pytest

from fedray.cli.main import main
from fedray.cli.unlearn import unlearned_config
from fedray.cli.source import SourceRun
from fedray.server.rundir import RunDirectory


@pytest.fixture
def fake_run(tmp_path):
    """A run directory of 4 clients where client 2 never took part (no training needed)."""
    run = RunDirectory(tmp_path / "src")
    run.write_config("name: src\nclients:\n  num_clients: 4\nserver:\n  clients_per_round: 2\n")
    run.write_metrics([{"round": 1, "clients": [0, 1]}, {"round": 2, "clients": [1, 3]}])
    return tmp_path / "src"


@pytest.mark.parametrize("args, expected", [
    (["--clients", "7"], "unknown client id(s) [7]; the run has clients 0..3"),
    (["--clients", "1,-1"], "unknown client id(s) [-1]"),
    (["--clients", "one"], "--clients 'one' must be client ids separated by commas"),
    (["--clients", "2"], "client(s) [2] never took part in"),
    (["--clients", "3", "--calibration-ratio", "0"], "--calibration-ratio must be in (0, 1], got 0.0"),
    (["--clients", "3", "server.rounds=zero"], "server.rounds: Value 'zero'"),
])
def test_bad_requests_exit_2_before_anything_runs(fake_run, tmp_path, capsys, args, expected):
    before = sorted(p.name for p in fake_run.iterdir())
    assert main(["unlearn", str(fake_run), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert sorted(p.name for p in fake_run.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["unlearn", str(tmp_path), "--clients", "1"]) == 2
    assert "is not a fedray run directory (needs config.yaml and metrics.parquet)" in capsys.readouterr().err


def test_the_new_config_excludes_the_clients_beside_the_source(fake_run):
    source = SourceRun.load(str(fake_run))
    assert source.first_round({3}) == 2 and source.first_round({0, 3}) == 1
    assert source.start_before({3}) == (0, None)
    cfg = unlearned_config(source, {3, 1}, ["train.lr=0.2"])
    assert cfg.clients.excluded == [1, 3] and cfg.name == "src-unlearned" and cfg.train.lr == 0.2
    assert cfg.output_dir == str(fake_run.resolve().parent)
    assert unlearned_config(source, {3}, ["name=mine"]).name == "mine"


@pytest.mark.parametrize("in_flight, expected", [((), 1), ((3,), 0), ((0,), 1)])
def test_retraining_starts_from_the_newest_checkpoint_the_clients_never_touched(fake_run, in_flight, expected):
    import numpy as np

    from fedray.server.buffered import InFlight
    from fedray.server.checkpoint import save_checkpoint
    from fedray.server.state import ServerState
    from fedray.types import ClientResult

    for server_round in (1, 2):  # client 3 is first aggregated in round 2
        flying = [InFlight(c, 0, 9.0, ClientResult(c, server_round)) for c in in_flight]
        save_checkpoint(fake_run / "checkpoints", ServerState(server_round, np.zeros(2, np.float32), (), (), {},
                                                              in_flight=flying), keep=5)
    start, where = SourceRun.load(str(fake_run)).start_before({3})
    assert start == expected and (where is None) == (expected == 0)


def test_unlearning_carries_the_remaining_clients_states_and_deletes_the_forgotten_ones(fake_run, tmp_path):
    """The source's store (4 clients on 2 actors by default) after rounds 1 and 2; the
    unlearned run resumes from round 2's checkpoint without client 3."""
    import numpy as np

    from fedray.cli.source import carry_client_states, forget_client_states, state_codec
    from fedray.client.pool import actor_index
    from fedray.client.store import ClientStates, StateStore, digest
    from fedray.server.state import ServerState

    source = SourceRun.load(str(fake_run))
    cfg = source.cfg
    codec = state_codec(cfg)
    where = fake_run / "clients"
    actors = {actor_index(c, cfg) for c in range(4)}
    hosts = {a: ClientStates(StateStore(str(where), a, codec), [c for c in range(4) if actor_index(c, cfg) == a], False)
             for a in actors}
    refs = {}
    for server_round, clients in ((1, (0, 1)), (2, (1, 3))):
        for cid in clients:
            hosts[actor_index(cid, cfg)].stage(cid, cid, (np.full(3, 10 * server_round + cid, np.float32),), ())
        for a, host in hosts.items():
            refs.update(host.commit(server_round, {c: c for c in clients if actor_index(c, cfg) == a}, {}, {}))
    state = ServerState(2, np.zeros(3, np.float32), (), None, {}, client_refs=dict(refs))
    target = tmp_path / "unlearned"
    assert carry_client_states(source, {3}, target, cfg, state) >= 2

    line = forget_client_states(source, {3})
    assert line.startswith(f"fedray unlearn: deleted client(s) [3]'s kept state from {where}")
    assert forget_client_states(source, {3}) is None  # nothing of it is left
    for store_dir in (where, target / "clients"):
        for cid, ref in refs.items():
            content = StateStore(str(store_dir), actor_index(cid, cfg), codec).read(ref.server_round)["committed"]
            assert (cid in content) == (cid != 3)
            if cid != 3:
                assert digest(content[cid]) == ref.digest
