"""Shared fixtures: one local Ray for the whole session, small configs."""

from __future__ import annotations

import os

import pytest

from fedray.config import RunConfig, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance shared by every test that needs one (starting costs seconds).
    Its workers import fedray's client code as they start, as a `fedray run`'s do."""
    import ray

    from fedray.session import PRELOAD

    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _system_config={"preload_python_modules": list(PRELOAD)})
    yield ray
    ray.shutdown()


def small_config(tmp_path, *overrides: str) -> RunConfig:
    """A fast digits config writing under tmp_path: 10 clients, pool of 2, 3 rounds."""
    base = [
        f"output_dir={tmp_path}",
        "name=test",
        "clients.num_clients=10",
        "clients.placement=pool",
        "clients.pool_size=2",
        "clients.resources.num_cpus=1",
        "server.rounds=3",
        "server.clients_per_round=5",
        "train.local_epochs=1",
        "train.lr=0.1",
    ]
    return load_config(None, [*base, *overrides])
