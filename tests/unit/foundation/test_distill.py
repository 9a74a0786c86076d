import numpy as np
import pytest
import torch

from fedray.config.schema import Dtype, FoundationConfig, ModelConfig
from fedray.foundation.distill import aggregate_top_k, kd_loss, top_k
from fedray.foundation.group import build_ds_config


def test_top_k_keeps_the_largest_in_order():
    logits = np.array([[0.1, 3.0, -1.0, 2.0], [5.0, 4.0, 3.0, 2.0]], dtype=np.float32)
    t = top_k(logits, 2)
    np.testing.assert_array_equal(t.indices, [[1, 3], [0, 1]])
    np.testing.assert_array_equal(t.values, [[3.0, 2.0], [5.0, 4.0]])
    assert t.num_bytes == 2 * 2 * 4 + 2 * 2 * 8


def test_kd_loss_is_zero_for_a_matching_student_and_equals_full_kl_when_k_is_everything():
    rng = np.random.default_rng(0)
    teacher_logits = rng.standard_normal((6, 5)).astype(np.float32)
    student = torch.tensor(rng.standard_normal((6, 5)), dtype=torch.float32)
    full = top_k(teacher_logits, 5)
    assert kd_loss(torch.tensor(teacher_logits), full, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(torch.tensor(teacher_logits) / 2.0, -1)
    reference = torch.nn.functional.kl_div(torch.log_softmax(student / 2.0, -1), p,
                                           reduction="batchmean") * 4.0
    assert kd_loss(student, full, 2.0).item() == pytest.approx(reference.item(), rel=1e-5)


def test_aggregating_full_teachers_is_the_weighted_mean_of_their_distributions():
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    agg = aggregate_top_k([top_k(a, 3), top_k(b, 3)], [1.0, 3.0], k=3, temperature=1.0)
    expected = (torch.softmax(torch.tensor(a), -1) + 3 * torch.softmax(torch.tensor(b), -1)) / 4
    got = np.zeros((4, 3))
    np.put_along_axis(got, agg.indices, np.exp(agg.values), -1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


def test_aggregating_different_supports_keeps_the_heaviest_entries():
    one = top_k(np.array([[10.0, 10.0, 0.0, 0.0]], dtype=np.float32), 2)  # 1/2 on 0 and on 1
    two = top_k(np.array([[0.0, 10.0, 10.0, 0.0]], dtype=np.float32), 2)  # 1/2 on 1 and on 2
    agg = aggregate_top_k([one, two], [1.0, 1.0], k=2, temperature=1.0)
    # index 1 is in both supports: mass 1/2, against 1/4 for 0 and for 2
    assert agg.indices[0, 0] == 1 and agg.indices.shape == (1, 2)
    assert np.exp(agg.values[0, 0]) == pytest.approx(0.5, rel=1e-6)


def test_deepspeed_config_is_generated_and_the_user_section_wins():
    cfg = FoundationConfig(model=ModelConfig(), zero_stage=3, num_workers=4, micro_batch_size=2,
                           offload=True, dtype=Dtype.bfloat16,
                           deepspeed={"zero_optimization": {"stage3_max_live_parameters": 1000},
                                      "gradient_clipping": 1.0})
    ds = build_ds_config(cfg)
    assert ds["train_batch_size"] == 8
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"] == {"device": "cpu"}
    assert ds["zero_optimization"]["stage3_max_live_parameters"] == 1000
    assert ds["bf16"] == {"enabled": True} and ds["gradient_clipping"] == 1.0


def test_knowledge_transfer_needs_a_shared_output_space_and_a_classification_task():
    import dataclasses

    from fedray.config import load_config
    from fedray.launcher import foundation_problems, prepare

    cfg = load_config(None, ["server.foundation_model.model.name=mlp"])
    prepared = prepare(cfg)
    client = build_model_for(cfg, prepared)
    assert foundation_problems(cfg, prepared.dataset, client) == []
    other = load_config(None, ["server.foundation_model.model.name=tests.helpers:seven_class_head"])
    assert foundation_problems(other, prepared.dataset, client) == [
        "server.foundation_model.model: server.distill: the clients' model has 10 outputs and the "
        "foundation model 7; knowledge transfer needs a shared output space (the same classes, "
        "or the same tokenizer and vocabulary)"]
    text = dataclasses.replace(prepared.dataset, info=dataclasses.replace(prepared.dataset.info, task="causal_lm"))
    assert "implemented for classification datasets" in foundation_problems(cfg, text, client)[0]


def build_model_for(cfg, prepared):
    from fedray.models.build import build_model

    return build_model(cfg.model, prepared.dataset.info, cfg.seed)
