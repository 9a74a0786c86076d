"""Every YAML in configs/ and cluster/ is valid: run configs resolve, cluster files parse and point at real configs."""

import json
import shlex
from pathlib import Path

import pytest
import yaml

from fedray.config import load_config
from fedray.experiments.sweep import plan_sweep
from fedray.launcher import prepare
from tests.conftest import REPO

CONFIGS = sorted(Path(REPO, "configs").glob("*.yaml"))
CLUSTER = sorted(Path(REPO, "cluster").rglob("*.yaml"))
IMAGE_ROOT = "/home/ray/fedray/"  # where cluster/Dockerfile copies the repository


def ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


def test_there_is_something_to_check():
    assert len(CONFIGS) >= 3 and len(CLUSTER) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_run_config_resolves(path):
    cfg = load_config(path)
    prepared = prepare(cfg, str(path), local=on_this_machine(cfg))
    assert prepared.num_params > 0
    if cfg.sweep.grid:
        assert len(plan_sweep(str(path), [], [])) >= 2


def on_this_machine(cfg) -> bool:
    """Whether the config writes from here: an object store named for a cluster
    (`s3://your-bucket`) is probed where the run writes, as `fedray submit` leaves it."""
    from fedray.server.storage import is_uri

    return not is_uri(cfg.output_dir)


def kubernetes_documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def check_launcher_config(doc):
    import jsonschema
    import ray

    schema = json.loads(Path(ray.__file__).with_name("autoscaler").joinpath("ray-schema.json").read_text())
    jsonschema.validate(doc, schema)
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    workers = [t for name, t in types.items() if name != doc["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) > 0 for t in workers), "a GPU worker type"
    for t in workers:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= doc["max_workers"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in doc[key]), f"{key} keeps token auth on"


def check_ray_cluster_spec(spec):
    assert spec["authOptions"]["mode"] == "token"
    assert int(spec["rayVersion"].split(".")[1]) >= 52  # token auth needs Ray 2.52+
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in spec["workerGroupSpecs"]
            for c in g["template"]["spec"]["containers"]]
    assert any(gpus), "a GPU worker group"


def check_ray_job(doc):
    check_ray_cluster_spec(doc["spec"]["rayClusterSpec"])
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "fedray", "run"]
    config = argv[4]
    assert config.startswith(IMAGE_ROOT), config
    local = Path(REPO, config.removeprefix(IMAGE_ROOT))
    assert local.is_file(), f"{config} names no config in the repository"
    cfg = load_config(local, argv[5:])
    prepare(cfg, str(local), local=on_this_machine(cfg))
    yaml.safe_load(doc["spec"]["runtimeEnvYAML"])


@pytest.mark.parametrize("path", CLUSTER, ids=ids(CLUSTER))
def test_cluster_file_is_valid(path):
    docs = kubernetes_documents(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if "cluster_name" in doc:
            check_launcher_config(doc)
        elif doc.get("kind") == "RayCluster":
            assert doc["apiVersion"] == "ray.io/v1"
            check_ray_cluster_spec(doc["spec"])
        elif doc.get("kind") == "RayJob":
            assert doc["apiVersion"] == "ray.io/v1"
            check_ray_job(doc)
        else:
            pytest.fail(f"{path}: neither a Ray cluster launcher config nor a KubeRay RayCluster/RayJob")


def test_the_image_holds_what_the_job_names():
    dockerfile = Path(REPO, "cluster", "Dockerfile").read_text()
    assert f"COPY --chown=ray:users . {IMAGE_ROOT.rstrip('/')}" in dockerfile
