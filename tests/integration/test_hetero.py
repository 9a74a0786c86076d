"""Heterogeneity-aware scheduling on a real local Ray: async stragglers, over-commitment,
profiles in the run directory, exact resume."""

import collections

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.hetero.availability import build_availability
from fedray.hetero.simulation import build_simulation
from fedray.launcher import prepare, run
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from fedray.types import ClientResult
from tests.helpers import untimed
from tests.conftest import small_config



def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()




def run_quiet(cfg, resume=None, warm=None):
    lines = []
    summary = run(prepare(cfg), console=lines.append, resume=resume, warm=warm)
    return summary, lines


def slow_client_trace(tmp_path, slow_factor):
    """Client 0 computes `slow_factor` x slower than clients 1-3; networks are fast."""
    path = tmp_path / "devices.csv"
    rows = [f"0,{1.0 / slow_factor},1e6,1e6"] + [f"{c},1.0,1e6,1e6" for c in (1, 2, 3)]
    path.write_text("client_id,compute_score,down_kbps,up_kbps\n" + "\n".join(rows) + "\n")
    return path


def test_async_applies_a_stragglers_update_late_with_a_lower_weight_and_only_once(ray_cluster, tmp_path, warm_actors):
    cfg = small_config(
        tmp_path, "clients.num_clients=4", "server.clients_per_round=4", "server.mode=async",
        "server.buffer_size=2", "server.min_clients=1", "server.rounds=10",
        f"clients.profiles.source={slow_client_trace(tmp_path, 6.0)}", "data.partition=iid",
    )
    summary, _ = run_quiet(cfg, warm=warm_actors)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 10
    rows = metrics(summary["run_dir"])

    applied = collections.Counter()
    for row in rows:
        assert len(row["clients"]) == len(row["staleness"]) == row["clients_succeeded"] == 2
        for cid, tau in zip(row["clients"], row["staleness"]):
            applied[(cid, row["round"] - 1 - tau)] += 1   # (client, model version it trained on)
    assert max(applied.values()) == 1, "an update was applied twice"

    slow = [(row["round"], tau) for row in rows for cid, tau in zip(row["clients"], row["staleness"]) if cid == 0]
    fast = [tau for row in rows for cid, tau in zip(row["clients"], row["staleness"]) if cid != 0]
    assert slow, "the straggler's update was never applied"
    assert min(tau for _, tau in slow) >= 3 > max(fast)
    # its weight 1/sqrt(1+tau) is lower than any fast client's
    assert max((1 + tau) ** -0.5 for _, tau in slow) < min((1 + tau) ** -0.5 for tau in fast)
    # the straggler trained on version 0 and landed when the others had moved the model on
    first_round, first_tau = slow[0]
    assert first_round - 1 - first_tau == 0

    clients = pq.read_table(tmp_path / "test" / "clients.parquet").to_pylist()
    for c in clients:
        assert c["times_aggregated"] == sum(n for (cid, _), n in applied.items() if cid == c["client_id"])
    assert clients[0]["last_compute_s"] == pytest.approx(6.0 * clients[1]["last_compute_s"], rel=0.2)
    sim = [r["sim_time_s"] for r in rows]
    assert sim == sorted(sim) and sim[0] > 0


def test_deadline_over_commits_and_aggregates_the_first_k(ray_cluster, tmp_path, warm_actors):
    common = ["clients.num_clients=20", "server.clients_per_round=5", "server.selection.name=deadline",
              "server.selection.deadline.overcommit=0.4", "clients.profiles.source=flash",
              "data.partition=dirichlet"]
    cfg = small_config(tmp_path / "a", *common)
    first, _ = run_quiet(cfg, warm=warm_actors)
    second, _ = run_quiet(small_config(tmp_path / "b", *common), warm=warm_actors)
    rows = metrics(first["run_dir"])
    for row in rows:
        assert (row["clients_selected"], row["clients_succeeded"], row["clients_late"]) == (7, 5, 2)
        assert row["clients_failed"] == 0
    assert untimed(rows) == untimed(metrics(second["run_dir"]))  # simulated time decides, not arrival
    assert rows[-1]["sim_time_s"] == pytest.approx(sum(r["sim_round_s"] for r in rows))

    # Replay the simulated durations: each round kept exactly its 5 earliest finishers
    # and ended when the 5th finished.
    log = (tmp_path / "a" / "test" / "log.txt").read_text().splitlines()
    late = [(int(line.split()[1]), float(line.split("simulated finish ")[1].split(" s")[0]))
            for line in log if "was late" in line]
    prepared = prepare(cfg)
    sim = build_simulation(cfg, np.diff(prepared.dataset.offsets), 4 * prepared.num_params)
    launches = collections.Counter()
    update = np.zeros(prepared.num_params, dtype=np.float32)
    for row, late_pair in zip(rows, zip(late[0::2], late[1::2])):
        finish = {}
        for cid in [*row["clients"], *(c for c, _ in late_pair)]:
            result = ClientResult(cid, row["round"], num_examples=1, payloads={"delta": update}, train_loss=1.0)
            finish[cid] = sim.timing(result, row["round"], launches[cid], 4 * prepared.num_params).total_s
            launches[cid] += 1
        for cid, logged in late_pair:
            assert finish[cid] == pytest.approx(logged, abs=0.05)
        kept = [finish[c] for c in row["clients"]]
        assert max(kept) <= min(finish[c] for c, _ in late_pair)
        assert row["sim_round_s"] == pytest.approx(max(kept))
    clients = pq.read_table(tmp_path / "a" / "test" / "clients.parquet").to_pylist()
    assert sum(c["times_late"] for c in clients) == 2 * len(rows)
    assert sum(c["times_aggregated"] for c in clients) == 5 * len(rows)


@pytest.mark.parametrize("scheduling", [
    ["server.selection.name=oort", "clients.availability.model=periodic",
     "clients.availability.period_s=20", "clients.availability.online_fraction=0.6"],
    ["server.mode=async", "server.buffer_size=3", "server.selection.name=power_of_choice"],
], ids=["oort-periodic", "async"])
def test_resume_continues_exactly(ray_cluster, tmp_path, scheduling, warm_actors):
    """Profiles, selector state, the simulated clock and (async) in-flight results are
    in the checkpoint: 3 rounds + 3 resumed ones equal 6 straight."""
    common = ["clients.profiles.source=flash", "data.partition=dirichlet", "clients.num_clients=12",
              "server.clients_per_round=5", *scheduling]
    cfg = small_config(tmp_path / "straight", *common, "server.rounds=6")
    straight, _ = run_quiet(cfg, warm=warm_actors)
    if cfg.server.mode.value == "sync":  # every client trained while online on the simulated clock
        online = build_availability(cfg.clients.availability, 12, cfg.seed).online
        rows = metrics(straight["run_dir"])
        starts = [0.0] + [r["sim_time_s"] for r in rows[:-1]]
        assert all(online(t)[r["clients"]].all() for t, r in zip(starts, rows))
        assert not all(online(t).all() for t in starts)  # and some were not
    first, _ = run_quiet(small_config(tmp_path / "split", *common, "server.rounds=3"), warm=warm_actors)
    resumed, lines = run_quiet(small_config(tmp_path / "split", *common, "server.rounds=6"),
                               resume=first["run_dir"], warm=warm_actors)
    assert resumed["status"] == "completed" and any("resuming after round 3" in line for line in lines)
    assert untimed(metrics(resumed["run_dir"])) == untimed(metrics(straight["run_dir"]))
    a = load_checkpoint(latest_checkpoint(tmp_path / "straight" / "test" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "test" / "checkpoints"))
    np.testing.assert_array_equal(a.params, b.params)
    assert a.sim_time_s == b.sim_time_s > 0
    np.testing.assert_array_equal(a.profiles.times_selected, b.profiles.times_selected)
    clients = pq.read_table(tmp_path / "split" / "test" / "clients.parquet")
    assert clients.num_rows == 12 and clients["client_id"].to_pylist() == list(range(12))
    assert {"sim_speed_factor", "sim_down_kbps", "last_duration_s", "examples_per_s"} <= set(clients.column_names)


def test_a_failing_client_is_retried_but_not_forever(ray_cluster, tmp_path, warm_actors):
    cfg = small_config(tmp_path, "data.partition=tests.helpers:iid_with_an_empty_client",
                       "server.clients_per_round=10", "server.rounds=4", "clients.max_failures=2")
    summary, _ = run_quiet(cfg, warm=warm_actors)
    rows = metrics(summary["run_dir"])
    assert [(r["clients_selected"], r["clients_failed"]) for r in rows] == [(10, 1), (10, 1), (9, 0), (9, 0)]
    client_3 = pq.read_table(tmp_path / "test" / "clients.parquet").to_pylist()[3]
    assert (client_3["failures"], client_3["consecutive_failures"], client_3["times_aggregated"]) == (2, 2, 0)
