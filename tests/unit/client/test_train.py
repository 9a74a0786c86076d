import numpy as np
import pytest

from fedray.client.train import train_local
from fedray.config.schema import DataConfig, ModelConfig, Optimizer, TrainConfig
from fedray.data.federated import build_federated_dataset
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec
from fedray.models.tasks import Classification


@pytest.fixture(scope="module")
def shard():
    data = build_federated_dataset(DataConfig(), num_clients=4, seed=0)
    task = Classification()
    return data, task, task.prepare(data.shard(0), __import__("torch").device("cpu"))


def fresh(data):
    return build_model(ModelConfig(hidden=[32]), data.info, seed=0)


def test_local_training_lowers_the_loss(shard):
    data, task, tensors = shard
    model = fresh(data)
    before = task.evaluate(model, tensors, 256)["loss"]
    train_local(model, task, tensors, TrainConfig(local_epochs=5, lr=0.1, momentum=0.9), seed=1)
    assert task.evaluate(model, tensors, 256)["loss"] < 0.5 * before


def test_local_steps_counts_minibatches_exactly(shard):
    data, task, tensors = shard
    result = train_local(fresh(data), task, tensors, TrainConfig(local_steps=7, batch_size=8), seed=1)
    assert result.steps == 7
    assert result.num_examples == data.num_examples(0)


def test_same_seed_same_weights_other_seed_differs(shard):
    data, task, tensors = shard
    runs = []
    for seed in (5, 5, 6):
        model = fresh(data)
        train_local(model, task, tensors, TrainConfig(batch_size=8), seed=seed)
        runs.append(get_flat(model, param_spec(model)))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_optimizer_state_is_returned_only_when_persisted(shard):
    data, task, tensors = shard
    cfg = TrainConfig(optimizer=Optimizer.adam, lr=1e-3, persist_optimizer_state=True)
    result = train_local(fresh(data), task, tensors, cfg, seed=1)
    assert result.optimizer_state["state"]  # Adam moments for every parameter
    cfg = TrainConfig(optimizer=Optimizer.adam, lr=1e-3)
    assert train_local(fresh(data), task, tensors, cfg, seed=1).optimizer_state is None


def test_accumulating_two_half_batches_equals_one_full_batch(shard):
    """With SGD, the mean gradient of two accumulated minibatches of 8 is the
    gradient of the 16 rows together: one step, the same weights."""
    data, task, tensors = shard
    full, accum = fresh(data), fresh(data)
    one = train_local(full, task, tensors, TrainConfig(local_steps=1, batch_size=16, lr=0.5), seed=3)
    two = train_local(accum, task, tensors, TrainConfig(local_steps=1, batch_size=8, grad_accum_steps=2, lr=0.5), seed=3)
    assert one.steps == two.steps == 1
    np.testing.assert_allclose(get_flat(accum, param_spec(accum)), get_flat(full, param_spec(full)), atol=1e-6)


def test_a_partial_accumulation_still_steps_at_the_end(shard):
    data, task, tensors = shard
    rows = data.num_examples(0)
    result = train_local(fresh(data), task, tensors, TrainConfig(batch_size=rows // 3 + 1, grad_accum_steps=2), seed=1)
    assert result.steps == 2  # three minibatches: one full accumulation, one remainder


def test_clipping_bounds_the_step(shard):
    data, task, tensors = shard
    model = fresh(data)
    before = get_flat(model, param_spec(model))
    train_local(model, task, tensors, TrainConfig(local_steps=1, lr=1.0, max_grad_norm=1e-3), seed=1)
    assert np.linalg.norm(get_flat(model, param_spec(model)) - before) <= 1e-3 + 1e-7


@pytest.mark.parametrize(
    "precision, device, expected",
    [("auto", "cpu", None), ("off", "cpu", None), ("bf16", "cpu", "bfloat16")],
)
def test_autocast_where_the_device_supports_it(precision, device, expected):
    import torch

    from fedray.client.train import autocast_dtype
    from fedray.config.schema import Precision

    got = autocast_dtype(Precision(precision), torch.device(device))
    assert got == (None if expected is None else getattr(torch, expected))


def test_fp16_on_cpu_is_refused_with_the_key():
    import torch

    from fedray.client.train import autocast_dtype
    from fedray.config.schema import Precision

    with pytest.raises(ValueError, match="train.mixed_precision=fp16 needs a CUDA device"):
        autocast_dtype(Precision.fp16, torch.device("cpu"))
