"""Algorithms through the seam on a real local Ray: per-client state that survives,
robust aggregation with async rounds, bugs that stop the run instead of hiding."""

import pathlib

import numpy as np
import pyarrow.parquet as pq
import ray

from fedray.launcher import prepare, run, run_key
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import small_config
from tests.helpers import kept_states, private_arrays_in_checkpoint, restart_when, untimed


def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()


def run_quiet(cfg, hook=None, warm=None):
    return run(prepare(cfg), console=hook or (lambda line: None), warm=warm)


SCAFFOLD = ["server.rounds=4", "server.strategy.name=scaffold", "data.partition=dirichlet", "data.alpha=0.3",
            "clients.num_clients=6", "server.clients_per_round=4"]


def test_scaffold_state_survives_an_actor_restart_bit_identically(ray_cluster, tmp_path):
    """Actor 0 of the pool is killed after round 2 and restarted by Ray: the transport
    re-sends its shards, its clients' control variates come from its state store, and
    the run ends bit-identical to one without the restart. No c_i is in the server's
    checkpoint, and c = mean(c_i)."""

    reference = run_quiet(small_config(tmp_path / "ref", *SCAFFOLD))
    name = f"fedray/{run_key(tmp_path / 'b' / 'test')}/0/client-actor-0"
    restart_actor_0_after_round_2 = restart_when("round 2/4", name)  # back up, without its shards
    restarted = run_quiet(small_config(tmp_path / "b", *SCAFFOLD), hook=restart_actor_0_after_round_2)
    assert restarted["status"] == "completed"
    rows = metrics(restarted["run_dir"])
    log = (tmp_path / "b" / "test" / "log.txt")
    assert all(r["clients_failed"] == 0 for r in rows), log.read_text() if log.exists() else rows
    assert untimed(rows) == untimed(metrics(reference["run_dir"]))
    ours = load_checkpoint(latest_checkpoint(tmp_path / "b" / "test" / "checkpoints"))
    theirs = load_checkpoint(latest_checkpoint(tmp_path / "ref" / "test" / "checkpoints"))
    np.testing.assert_array_equal(ours.params, theirs.params)
    np.testing.assert_array_equal(ours.term_states[0], theirs.term_states[0])  # the server's c
    mine = kept_states(tmp_path / "b" / "test", small_config(tmp_path / "b", *SCAFFOLD))
    other = kept_states(tmp_path / "ref" / "test", small_config(tmp_path / "ref", *SCAFFOLD))
    assert sorted(mine) == sorted(other) != [] and ours.client_refs == theirs.client_refs
    for cid, kept in mine.items():  # every client's c_i, from its actor's store
        np.testing.assert_array_equal(kept.terms[0], other[cid].terms[0])
    # c = mean(c_i) over all clients (SCAFFOLD's invariant: only aggregated c_i moved)
    num_clients = 6
    c_i = np.zeros_like(ours.term_states[0])
    for kept in mine.values():
        c_i += kept.terms[0]
    np.testing.assert_allclose(ours.term_states[0], c_i / num_clients, atol=1e-6)
    assert private_arrays_in_checkpoint(tmp_path / "b" / "test", mine) == []
    assert np.isnan([r["eval_perplexity"] for r in rows]).all()  # not a language model
    assert "perplexity" not in restarted["final_metrics"]
    # Ray never had to replay constructor arguments from the object store (ray#53727)
    logs = pathlib.Path(ray._private.worker._global_node.get_logs_dir_path())
    assert not [p.name for p in logs.iterdir() if p.is_file()
                and "constructor arguments in the object store" in p.read_text(errors="replace")]


def test_robust_aggregation_in_async_mode_with_fedprox(ray_cluster, tmp_path, warm_actors):
    """A buffering aggregator, a local objective term and FedBuff's staleness scaling together."""
    cfg = small_config(tmp_path, "server.mode=async", "server.clients_per_round=6", "server.buffer_size=5",
                       "server.aggregator={name: trimmed_mean, args: {beta: 0.2}}",
                       "server.strategy={name: fedprox, args: {mu: 0.05}}", "server.rounds=4",
                       "clients.profiles.source=lognormal")
    summary = run_quiet(cfg, warm=warm_actors)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 4
    rows = metrics(summary["run_dir"])
    assert all(r["clients_succeeded"] == 5 for r in rows)
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]


def test_a_bug_in_user_code_stops_the_run_with_its_traceback(ray_cluster, tmp_path):
    """A client failure is counted; an AttributeError in a client transform is a bug."""
    lines = []
    cfg = small_config(tmp_path, "clients.transforms=[{name: tests.helpers:breaks_in_round_2}]")
    summary = run(prepare(cfg), console=lines.append)
    assert summary["status"] == "failed" and summary["rounds_completed"] == 1
    assert any(line.startswith("fedray: stopping: round 2: AttributeError:") and "nonexistent_method" in line
               and "log.txt" in line for line in lines), lines
    log = (tmp_path / "test" / "log.txt").read_text()
    assert "Traceback" in log and "tests/helpers.py" in log and "in apply" in log
    assert len(metrics(summary["run_dir"])) == 1


def test_a_value_error_in_user_code_on_a_client_is_a_bug_naming_the_component(ray_cluster, tmp_path):
    """`ctx.rng("noise")` raises ValueError inside a user transform: not a data failure of
    every client (retries, "fell short of min_clients"), but a bug that stops the run."""
    lines = []
    cfg = small_config(tmp_path, "clients.transforms=[{name: tests.helpers:draws_with_a_string_tag}]")
    summary = run(prepare(cfg), console=lines.append)
    assert summary["status"] == "failed" and summary["rounds_completed"] == 0
    stop = [line for line in lines if line.startswith("fedray: stopping: round 1:")]
    assert stop and "[clients.transforms[0] (tests.helpers:draws_with_a_string_tag)] raised ValueError" in stop[0], lines
    log = (tmp_path / "test" / "log.txt").read_text()
    assert "Traceback" in log and "tests/helpers.py" in log and "fell short" not in log
