"""Data stays at its site: a run's driver puts no training rows into Ray's object store."""

import os

import pyarrow.parquet as pq

from fedray.config import load_config
from fedray.launcher import prepare, run
from tests.conftest import REPO


def driver_object_sizes(ray) -> list[int]:
    """Bytes of every object this process (the driver) holds a reference to, as the
    raylet reports them (what the object store and the driver's memory store hold)."""
    from ray._private.internal_api import node_stats

    node = next(n for n in ray.nodes() if n["Alive"] and n["NodeID"] == ray.get_runtime_context().get_node_id())
    reply = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=True)
    return [ref.object_size for stats in reply.core_workers_stats if stats.pid == os.getpid()
            for ref in stats.object_refs]


def test_a_quickstart_run_puts_no_training_rows_into_the_object_store(ray_cluster, tmp_path):
    cfg = load_config(f"{REPO}/configs/quickstart.yaml", [f"output_dir={tmp_path}", "server.rounds=1"])
    prepared = prepare(cfg)
    plan = prepared.dataset
    features_bytes = len(plan.rows) * plan.info.num_features * 4  # float32: what the rows would weigh
    seen: list[list[int]] = []

    def console(line: str) -> None:
        if line.startswith("round 1/"):  # the actors are up, trained, and the round's objects are live
            seen.append(driver_object_sizes(ray_cluster))

    summary = run(prepared, console=console)
    assert summary["status"] == "completed" and len(seen) == 1
    sizes = seen[0]
    assert len(sizes) >= cfg.clients.num_actors  # the actors' shard plans are among them
    assert sum(sizes) < features_bytes, (sum(sizes), features_bytes)  # the rows cannot be in there
    clients = pq.read_table(f"{summary['run_dir']}/clients.parquet").to_pylist()
    assert [c["data_source"] for c in clients] == [""] * cfg.clients.num_clients  # planned rows, no site files
