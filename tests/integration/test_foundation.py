"""The ZeRO worker group on a real local Ray: two ranks over gloo on CPU."""

import numpy as np
import pytest

from fedray.config.schema import FoundationConfig, ModelConfig, ResourcesConfig
from fedray.data.arrow import to_numpy
from fedray.data.federated import build_federated_dataset
from fedray.config.schema import DataConfig
from fedray.foundation.distill import top_k
from fedray.foundation.group import FoundationError, FoundationGroup


@pytest.fixture(scope="module")
def digits():
    data = build_federated_dataset(DataConfig(), num_clients=2, seed=0)
    x, y = to_numpy(data.test)
    return data.info, np.ascontiguousarray(x), np.ascontiguousarray(y)


def config(stage=3, **kw):
    return FoundationConfig(model=ModelConfig(hidden=[256, 256]), zero_stage=stage, num_workers=2,
                            resources=ResourcesConfig(num_cpus=1), micro_batch_size=32, lr=3e-3, **kw)


def halves(x, y):
    return [{"inputs": x[:32], "labels": y[:32]}, {"inputs": x[32:64], "labels": y[32:64]}]


@pytest.fixture(scope="module")
def group(ray_cluster, digits):
    info, _, _ = digits
    g = FoundationGroup(config(), info, seed=0, name_prefix="foundation-test")
    yield g
    g.shutdown()


def test_zero3_partitions_the_parameters_across_two_ranks(group):
    total = 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert [r["total_numel"] for r in group.ranks] == [total, total]
    assert {r["backend"] for r in group.ranks} == {"gloo"}
    local = group.partition_numels()
    assert sum(local) >= total
    for n in local:
        # each rank holds about half (ZeRO-3 pads every tensor to a multiple of the world size)
        assert abs(n - total / 2) <= 6


def test_training_and_distillation_steps_lower_their_losses(group, digits):
    _, x, y = digits
    losses = [group.train_step(halves(x, y), "supervised") for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]
    # distil towards a fixed teacher: a random linear map of the inputs
    teacher = top_k(x[:64] @ np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32), 5, 2.0)
    batches = [{"inputs": x[i:i + 32], "teacher_values": teacher.values[i:i + 32],
                "teacher_indices": teacher.indices[i:i + 32]} for i in (0, 32)]
    kd = [group.train_step(batches, "distill", temperature=2.0) for _ in range(15)]
    assert kd[-1] < 0.5 * kd[0]


def test_checkpoint_reloads_to_the_same_logits(group, digits, tmp_path, ray_cluster):
    info, x, _ = digits
    before = group.top_k(x[:16], 10, 1.0).values  # all ten classes: log-probabilities, sorted
    group.save(str(tmp_path), "round_000001")
    assert (tmp_path / "round_000001").is_dir()
    other = FoundationGroup(config(), info, seed=1, name_prefix="foundation-reload")
    try:
        assert not np.allclose(other.top_k(x[:16], 10, 1.0).values, before)  # other seed, other weights
        other.load(str(tmp_path), "round_000001")
        np.testing.assert_allclose(other.top_k(x[:16], 10, 1.0).values, before, rtol=1e-5, atol=1e-6)
    finally:
        other.shutdown()


def test_a_dead_rank_is_a_clear_error_not_a_hang(ray_cluster, digits):
    import ray

    info, x, y = digits
    g = FoundationGroup(config(timeout_s=20), info, seed=0, name_prefix="foundation-doomed")
    ray.kill(g.workers[1])
    with pytest.raises(FoundationError, match="foundation model rank 1 failed: .*Actor"):
        g.train_step(halves(x, y), "supervised")


# ---- the foundation model inside federated runs ----------------------------------
import json  # noqa: E402
import shutil  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from fedray.config import load_config  # noqa: E402
from fedray.foundation.distill import TopK  # noqa: E402
from fedray.foundation.export import export_foundation  # noqa: E402
from fedray.foundation.transfer import Distiller  # noqa: E402
from fedray.config.schema import DistillConfig  # noqa: E402
from fedray.launcher import prepare, run, run_key  # noqa: E402
from fedray.models.build import build_model  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.helpers import alive, untimed, wait_for  # noqa: E402


def kd_config(tmp_path, *overrides):
    return load_config(f"{REPO}/configs/fedfm_kd.yaml",
                       [f"output_dir={tmp_path}", "server.rounds=3", *overrides])


def test_server_distillation_steps_lower_the_kd_loss_on_the_public_set(ray_cluster, digits):
    info, x, y = digits
    distiller = Distiller(config(), DistillConfig(client_to_server=True, server_steps=20, top_k=5),
                          info, x[:128], y[:128], seed=0, name_prefix="distiller-test")
    try:
        rng = np.random.default_rng(1)
        # what two clients might send: their (different) views of the public inputs
        clients = [top_k(x[:128] @ rng.standard_normal((64, 10)).astype(np.float32), 5, 2.0) for _ in range(2)]
        from fedray.foundation.distill import aggregate_top_k
        target = aggregate_top_k(clients, [3.0, 1.0], k=5)
        before = distiller.kd_loss_on_public(target)
        last_step = distiller.absorb(clients, [3.0, 1.0])
        after = distiller.kd_loss_on_public(target)
        assert after < 0.5 * before and np.isfinite(last_step)
    finally:
        distiller.shutdown()


def test_server_to_client_distillation_lowers_the_clients_held_out_loss(ray_cluster, tmp_path):
    """Same seed, same public split; only the teacher's broadcast differs (label skew
    alpha=0.1, where a warmed-up foundation model has most to teach)."""
    before = alive()
    with_kd = run(prepare(kd_config(tmp_path / "on", "server.distill.client_to_server=false")),
                  console=lambda line: None)
    wait_for(lambda: alive() == before, "the finished run's ranks and placement group to be gone")
    without = run(prepare(kd_config(tmp_path / "off", "server.distill.client_to_server=false",
                                    "server.distill.server_to_client=false")), console=lambda line: None)
    assert with_kd["final_metrics"]["loss"] < without["final_metrics"]["loss"]
    rows = pq.read_table(f"{with_kd['run_dir']}/metrics.parquet").to_pylist()
    params = (64 * 32 + 32 + 32 * 10 + 10) * 4
    teacher = 256 * 10 * (4 + 8)  # top-10 values and indices for 256 public inputs
    assert rows[0]["bytes_down"] == 10 * (params + teacher)


def test_clients_teach_the_server_and_its_shards_export(ray_cluster, tmp_path, digits):
    summary = run(prepare(kd_config(tmp_path, "server.checkpoint_every=1", "server.distill.server_to_client=false")),
                  console=lambda line: None)
    rows = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()
    assert all(np.isfinite(r["kd_loss"]) for r in rows)
    assert rows[0]["bytes_up"] == 10 * ((64 * 32 + 32 + 32 * 10 + 10) * 4 + 256 * 10 * 12)
    shards = tmp_path / "fedfm_kd" / "checkpoints" / "foundation"
    assert sorted(p.name for p in shards.iterdir() if p.name.startswith("round_")) == [
        "round_000001", "round_000002", "round_000003"]
    # the consolidated fp32 export is a plain state dict of the full model
    path = export_foundation(tmp_path / "fedfm_kd", tmp_path / "export")
    cfg = kd_config(tmp_path)
    model = build_model(cfg.server.foundation_model.model, digits[0], seed=0)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path))
    assert sum(p.numel() for p in model.parameters()) == 64 * 512 + 512 + 512 * 512 + 512 + 5130

    # Resume from round 2 (its shards, its checkpoint, the distiller's generator): round 3
    # runs again exactly as it did, down to the public minibatches of the ZeRO steps.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fedfm_kd", resumed_dir)
    (resumed_dir / "checkpoints" / "round_000003.safetensors").unlink()
    shutil.rmtree(resumed_dir / "checkpoints" / "foundation" / "round_000003")
    again = run(prepare(kd_config(tmp_path, "server.checkpoint_every=1", "server.distill.server_to_client=false")),
                console=lambda line: None, resume=str(resumed_dir))
    assert again["status"] == "completed"
    assert untimed(pq.read_table(resumed_dir / "metrics.parquet").to_pylist()) == untimed(rows)


def test_a_dead_rank_mid_run_stops_the_run_with_its_checkpoint(ray_cluster, tmp_path):
    import ray

    lines = []

    def kill_rank_1_after_round_1(line):
        lines.append(line)
        if line.startswith("round 1/3"):
            key = run_key(tmp_path / "fedfm_kd")
            ray.kill(ray.get_actor(f"fedray/{key}/0/foundation-rank-1"))

    cfg = kd_config(tmp_path, "server.checkpoint_every=1", "server.foundation_model.timeout_s=20")
    before = alive()
    summary = run(prepare(cfg), console=kill_rank_1_after_round_1)
    assert summary["status"] == "failed" and summary["rounds_completed"] == 1
    wait_for(lambda: alive() == before, "the failed run's actors and placement group to be gone")
    assert any("fedray: stopping: round 2: foundation model rank 1 failed" in line for line in lines)
    log = (tmp_path / "fedfm_kd" / "log.txt").read_text()
    assert "foundation model rank 1 failed" in log
    assert (tmp_path / "fedfm_kd" / "checkpoints" / "round_000001.safetensors").is_file()
    assert (tmp_path / "fedfm_kd" / "checkpoints" / "foundation" / "round_000001").is_dir()
    assert json.loads((tmp_path / "fedfm_kd" / "summary.json").read_text())["status"] == "failed"
