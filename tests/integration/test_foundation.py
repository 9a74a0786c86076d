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
    losses = [group.train_step(halves(x, y), "cross_entropy") for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]
    # distil towards a fixed teacher: a random linear map of the inputs
    teacher = top_k(x[:64] @ np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32), 5)
    batches = [{"inputs": x[i:i + 32], "teacher_values": teacher.values[i:i + 32],
                "teacher_indices": teacher.indices[i:i + 32]} for i in (0, 32)]
    kd = [group.train_step(batches, "distill", temperature=2.0) for _ in range(15)]
    assert kd[-1] < 0.5 * kd[0]


def test_checkpoint_reloads_to_the_same_logits(group, digits, tmp_path, ray_cluster):
    info, x, _ = digits
    before = group.logits(x[:16])
    group.save(str(tmp_path), "round_000001")
    assert (tmp_path / "round_000001").is_dir()
    other = FoundationGroup(config(), info, seed=1, name_prefix="foundation-reload")
    try:
        assert not np.allclose(other.logits(x[:16]), before)  # other seed, other weights
        other.load(str(tmp_path), "round_000001")
        np.testing.assert_allclose(other.logits(x[:16]), before, rtol=1e-5, atol=1e-6)
    finally:
        other.shutdown()


def test_a_dead_rank_is_a_clear_error_not_a_hang(ray_cluster, digits):
    import ray

    info, x, y = digits
    g = FoundationGroup(config(timeout_s=20), info, seed=0, name_prefix="foundation-doomed")
    ray.kill(g.workers[1])
    with pytest.raises(FoundationError, match="foundation model rank 1 failed: .*Actor"):
        g.train_step(halves(x, y), "cross_entropy")
