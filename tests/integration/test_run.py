"""End-to-end federated runs on a real local Ray."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from fedray.config import ConfigError, load_config
from fedray.launcher import prepare, run
from tests.helpers import driver_object_sizes, untimed
from tests.conftest import REPO, small_config

METRIC_COLUMNS = {
    "round", "clients_selected", "clients_succeeded", "clients_failed", "updates_rejected",
    "train_loss", "eval_loss", "eval_accuracy", "bytes_up", "bytes_down", "round_wall_s", "wall_s",
    "attempts", "clients",
}


def run_quiet(cfg, warm=None):
    lines = []
    summary = run(prepare(cfg), console=lines.append, warm=warm)
    return summary, lines


def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()


def test_pool_run_writes_a_complete_run_directory(ray_cluster, tmp_path, warm_actors):
    cfg = small_config(tmp_path, "server.checkpoint_every=2", "server.keep_checkpoints=1")
    summary, lines = run_quiet(cfg, warm_actors)
    run_dir = tmp_path / "test"
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    assert summary["run_dir"] == str(run_dir)

    rows = metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert METRIC_COLUMNS <= set(rows[0])
    num_params = prepare(cfg).num_params  # the model's size, as the run counted it
    for r in rows:
        assert r["clients_selected"] == r["clients_succeeded"] == 5
        assert r["bytes_down"] == r["bytes_up"] == 5 * 4 * num_params
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]

    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["final_metrics"]["accuracy"] == pytest.approx(rows[-1]["eval_accuracy"])
    assert on_disk["final_metrics"]["loss"] == pytest.approx(rows[-1]["eval_loss"])
    # the run's wall time holds its rounds' (start-up and the summary come on top)
    assert on_disk["rounds_wall_s"] == pytest.approx(rows[-1]["wall_s"]) and on_disk["wall_s"] >= on_disk["rounds_wall_s"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["server"]["rounds"] == 3
    # checkpoint_every=2 and always after the last round; keep only the newest
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["round_000003.safetensors"]
    assert any(line.startswith("round 3/3 | clients 5/5") for line in lines)


def test_placement_does_not_change_the_result(ray_cluster, tmp_path):
    """Seeds are per (round, client) and sums run in client order, so the same clients
    on one actor each or multiplexed over a pool give bit-identical metrics."""
    common = ["clients.num_clients=6", "server.clients_per_round=4", "clients.resources.num_cpus=0.5"]
    per_client, _ = run_quiet(small_config(tmp_path / "a", *common, "clients.placement=actor_per_client"))
    pooled, _ = run_quiet(small_config(tmp_path / "b", *common, "clients.placement=pool"))
    a, b = metrics(per_client["run_dir"]), metrics(pooled["run_dir"])
    assert untimed(a) == untimed(b)


def test_a_client_that_raises_does_not_end_the_run(ray_cluster, tmp_path, warm_actors):
    cfg = small_config(
        tmp_path, "data.partition=tests.helpers:iid_with_an_empty_client",
        "server.clients_per_round=10", "server.min_clients=5",
    )
    summary, lines = run_quiet(cfg, warm_actors)
    assert summary["status"] == "completed"
    rows = metrics(summary["run_dir"])
    for r in rows:
        assert (r["clients_selected"], r["clients_succeeded"], r["clients_failed"]) == (10, 9, 1)
    log = (tmp_path / "test" / "log.txt").read_text()
    assert "client 3 failed: ValueError: the client has no training examples" in log
    assert any("warning: client 3 failed" in line for line in lines)
    assert rows[-1]["eval_accuracy"] > rows[0]["eval_accuracy"]


def test_same_seed_same_metrics(ray_cluster, tmp_path, warm_actors):
    first, _ = run_quiet(small_config(tmp_path / "a", "data.partition=dirichlet"), warm_actors)
    second, _ = run_quiet(small_config(tmp_path / "b", "data.partition=dirichlet"), warm_actors)
    other, _ = run_quiet(small_config(tmp_path / "c", "data.partition=dirichlet", "seed=1"), warm_actors)
    assert untimed(metrics(first["run_dir"])) == untimed(metrics(second["run_dir"]))
    assert untimed(metrics(first["run_dir"])) != untimed(metrics(other["run_dir"]))


def test_unsatisfiable_resources_fail_fast_naming_them(ray_cluster, tmp_path):
    cfg = small_config(tmp_path, "clients.resources.custom.silo_z=1")
    with pytest.raises(ConfigError, match="client actor 0 needs .*silo_z.*no node offers 'silo_z'"):
        run_quiet(cfg)


def test_kept_state_stays_with_the_client_and_only_committed_state_counts(ray_cluster, tmp_path):
    """A fit leaves the client's new state (here Adam's moments) pending on its actor and
    sends back only a reference to it; the commit makes it current, and the next fit that
    names it trains from it. A fit that names no state starts from the initial one."""
    import ray

    from fedray.client.pool import ClientPool
    from fedray.models.build import build_model
    from fedray.models.flat import get_flat, param_spec
    from fedray.strategy.exchange import Send
    from fedray.types import FitInstructions

    cfg = small_config(tmp_path, "train.optimizer=adam", "train.lr=0.001",
                       "train.persist_optimizer_state=true", "clients.num_clients=4",
                       "server.clients_per_round=2")
    prepared = prepare(cfg)
    pool = ClientPool(cfg, prepared.dataset, f"state-test-{tmp_path.name}")
    pool.describe()
    model = build_model(cfg.model, prepared.dataset.info, cfg.seed)
    params = get_flat(model, param_spec(model))
    send = Send({"params": ray.put(params)}, params.nbytes)
    first = ray.get([pool.fit(FitInstructions(1, c, c), send) for c in (0, 2)])
    assert all(r.ok and r.pending is not None for r in first)
    assert not hasattr(first[0], "state")  # nothing of the state itself comes back
    refs = {}
    for answer in ray.get(pool.commit(1, {0: first[0].pending.token}, {}, {})):
        refs.update(answer)
    assert sorted(refs) == [0] and refs[0].digest == first[0].pending.digest  # client 2's was dropped
    resumed = ray.get(pool.fit(FitInstructions(2, 0, 5, state=refs[0]), send))
    fresh = ray.get(pool.fit(FitInstructions(2, 0, 5), send))
    assert resumed.ok and fresh.ok
    assert not np.array_equal(resumed.update, fresh.update)  # the moments shaped the step
    pool.shutdown()


@pytest.mark.slow
def test_quickstart_reaches_the_target_accuracy_and_its_driver_puts_no_training_rows_into_the_object_store(
        ray_cluster, tmp_path):
    """configs/quickstart.yaml as shipped (only the output directory moved). Data stays at
    its site: once round 1 has trained, the objects the driver holds weigh less than the
    rows would, so the rows were built on the client actors, not shipped there."""
    cfg = load_config(f"{REPO}/configs/quickstart.yaml", [f"output_dir={tmp_path}"])
    prepared = prepare(cfg)
    plan = prepared.dataset
    features_bytes = len(plan.rows) * plan.info.num_features * 4  # float32: what the rows would weigh
    seen: list[list[int]] = []

    def console(line: str) -> None:
        if line.split("/")[0] == "round  1":  # (padded to 20's width) the actors are up and trained
            seen.append(driver_object_sizes(ray_cluster))

    summary = run(prepared, console=console)
    assert summary["final_metrics"]["accuracy"] >= 0.90
    rows = metrics(summary["run_dir"])
    assert len(rows) == 20 and all(r["clients_succeeded"] == 10 for r in rows)
    accuracy = np.array([r["eval_accuracy"] for r in rows])
    assert accuracy[-5:].mean() > accuracy[:5].mean() + 0.2

    assert len(seen) == 1
    sizes = seen[0]
    assert len(sizes) >= cfg.clients.num_actors  # the actors' shard plans are among them
    assert sum(sizes) < features_bytes, (sum(sizes), features_bytes)  # the rows cannot be in there
    clients = pq.read_table(f"{summary['run_dir']}/clients.parquet").to_pylist()
    assert [c["data_source"] for c in clients] == [""] * cfg.clients.num_clients  # planned rows, no site files
