"""Shared fixtures: one local Ray for the whole session, small configs."""

from __future__ import annotations

import os

# One numeric code path on every x86 machine CI may land on: torch's own kernels, MKL
# and oneDNN otherwise pick AVX-512 or AVX2 code by the CPU, and a few-step training
# run's figures move with the rounding (the text KD test measured 2.907 nats per byte on
# one CPU and 2.944 on another). Set before torch is imported here or in any Ray worker
# (workers inherit the environment of the process that starts Ray).
for _name, _value in {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}.items():
    os.environ.setdefault(_name, _value)

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


_WARM: list = []
"""The session's idle client actors (`WarmActors`), once a test has asked for them."""


@pytest.fixture
def warm_actors(ray_cluster):
    """Client actors kept warm between the tests that ask for them, as `fedray sweep`
    keeps them between runs: pass it as `run(..., warm=warm_actors)` and the run takes
    over idle actors whose resources match (and leaves its own). Only for tests that do
    not look client actors up by name: a reused actor keeps its first run's name."""
    from fedray.client.pool import WarmActors

    if not _WARM:
        _WARM.append(WarmActors())
    return _WARM[0]


@pytest.fixture(autouse=True)
def _no_idle_actors_unless_asked(request):
    """A test that does not take warm actors finds none idle: they would hold CPUs it may need."""
    if _WARM and "warm_actors" not in request.fixturenames:
        _WARM[0].release()


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
