"""Distillation losses, top-k payloads and their aggregation; the client side of transfer."""

import numpy as np
import pytest
import torch

from fedray.config.schema import Dtype, FoundationConfig, ModelConfig
from fedray.foundation.distill import TopK, aggregate_top_k, kd_loss, top_k, top_k_torch
from fedray.foundation.group import build_ds_config


def test_top_k_keeps_the_most_likely_entries_as_log_probabilities_in_order():
    logits = np.array([[0.1, 3.0, -1.0, 2.0], [5.0, 4.0, 3.0, 2.0]], dtype=np.float32)
    t = top_k(logits, 2, temperature=2.0)
    np.testing.assert_array_equal(t.indices, [[1, 3], [0, 1]])
    probs = torch.softmax(torch.tensor(logits) / 2.0, -1).numpy()
    np.testing.assert_allclose(np.exp(t.values), np.take_along_axis(probs, t.indices, -1), rtol=1e-6)
    assert t.num_bytes == 2 * 2 * 4 + 2 * 2 * 8
    torch_t = top_k_torch(torch.tensor(logits), 2, 2.0)
    np.testing.assert_allclose(torch_t.values, t.values, rtol=1e-6)
    np.testing.assert_array_equal(torch_t.indices, t.indices)


@pytest.mark.parametrize("rest_mass", [False, True])
def test_kd_loss_is_zero_for_a_matching_student_and_equals_full_kl_when_k_is_everything(rest_mass):
    rng = np.random.default_rng(0)
    teacher_logits = rng.standard_normal((6, 5)).astype(np.float32)
    student = torch.tensor(rng.standard_normal((6, 5)), dtype=torch.float32)
    full = top_k(teacher_logits, 5, 2.0)
    matching = kd_loss(torch.tensor(teacher_logits), full, 2.0, rest_mass=rest_mass).item()
    assert matching == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(torch.tensor(teacher_logits) / 2.0, -1)
    reference = torch.nn.functional.kl_div(torch.log_softmax(student / 2.0, -1), p,
                                           reduction="batchmean") * 4.0
    assert kd_loss(student, full, 2.0, rest_mass=rest_mass).item() == pytest.approx(reference.item(), rel=1e-5)


def test_with_k_below_the_vocabulary_kd_renormalises_or_keeps_the_rest_as_one_outcome():
    rng = np.random.default_rng(4)
    teacher_logits, student_logits = rng.standard_normal((2, 3, 7)) * 2
    teacher = top_k(teacher_logits, 3, 1.0)
    p = torch.softmax(torch.tensor(teacher_logits), -1).numpy()
    q = torch.softmax(torch.tensor(student_logits), -1).numpy()
    renormalised, with_rest = [], []
    for pos in range(3):
        pk, qk = p[pos, teacher.indices[pos]], q[pos, teacher.indices[pos]]
        renormalised.append((pk / pk.sum() * np.log((pk / pk.sum()) / (qk / qk.sum()))).sum())
        coarse_p, coarse_q = np.append(pk, 1 - pk.sum()), np.append(qk, 1 - qk.sum())
        with_rest.append((coarse_p * np.log(coarse_p / coarse_q)).sum())
    student = torch.tensor(student_logits)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(np.mean(renormalised), rel=1e-5)
    assert kd_loss(student, teacher, 1.0, rest_mass=True).item() == pytest.approx(np.mean(with_rest), rel=1e-5)
    # a student with the teacher's odds among the k entries but little mass on them:
    # perfect when renormalised, not when the rest counts
    shifted = torch.tensor(teacher_logits).clone()
    for pos in range(3):
        shifted[pos, teacher.indices[pos]] -= 3.0
    assert kd_loss(shifted, teacher, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(shifted, teacher, 1.0, rest_mass=True).item() > 0.1


def test_aggregating_full_teachers_is_the_weighted_mean_of_their_distributions():
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    agg = aggregate_top_k([top_k(a, 3, 1.0), top_k(b, 3, 1.0)], [1.0, 3.0], k=3)
    expected = (torch.softmax(torch.tensor(a), -1) + 3 * torch.softmax(torch.tensor(b), -1)) / 4
    got = np.zeros((4, 3))
    np.put_along_axis(got, agg.indices, np.exp(agg.values), -1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


def test_aggregating_different_supports_keeps_the_heaviest_entries():
    one = top_k(np.array([[10.0, 10.0, 0.0, 0.0]], dtype=np.float32), 2, 1.0)  # ~1/2 on 0 and on 1
    two = top_k(np.array([[0.0, 10.0, 10.0, 0.0]], dtype=np.float32), 2, 1.0)  # ~1/2 on 1 and on 2
    agg = aggregate_top_k([one, two], [1.0, 1.0], k=2)
    # index 1 is in both supports: mass 1/2, against 1/4 for 0 and for 2
    assert agg.indices[0, 0] == 1 and agg.indices.shape == (1, 2)
    assert np.exp(agg.values[0, 0]) == pytest.approx(0.5, rel=1e-3)
    assert np.exp(agg.values[0, 1]) == pytest.approx(0.25, rel=1e-3)


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


def test_knowledge_transfer_needs_a_shared_output_space_and_a_known_task():
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
    info = dataclasses.replace(prepared.dataset.info, task="regression")
    odd = dataclasses.replace(prepared.dataset, info=info)
    assert foundation_problems(cfg, odd, client) == [
        "server.foundation_model: knowledge transfer is implemented for ['causal_lm', 'classification'] "
        "datasets, not for task 'regression' (data.dataset=digits)"]


def build_model_for(cfg, prepared):
    from fedray.models.build import build_model

    return build_model(cfg.model, prepared.dataset.info, cfg.seed)


# ---- causal LMs: positions, masks, the client-side functions ------------------------
from fedray.foundation.distill import kd_regularizer, public_logits, public_tensor  # noqa: E402

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}


def tiny_llama(seed, **fields):
    from fedray.data.text import text_info
    from fedray.models.build import build_model

    return build_model(ModelConfig(name="hf_causal_lm", config={**TINY, **fields}), text_info(16, 257), seed)


def public_rows(seed=0, rows=8, length=16):
    """Byte rows, the last two padded (-1) at their ends as packed text is."""
    ids = np.random.default_rng(seed).integers(0, 256, (rows, length)).astype(np.int32)
    ids[-2:, length // 2:] = -1
    return ids


def test_a_masked_kd_loss_is_the_mean_over_real_positions_only():
    rng = np.random.default_rng(2)
    teacher = top_k(rng.standard_normal((3, 4, 6)).astype(np.float32), 6, 2.0)
    student = torch.tensor(rng.standard_normal((3, 4, 6)), dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    real = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    expected = np.mean([kd_loss(student[i, j][None], TopK(teacher.values[i, j][None],
                                                           teacher.indices[i, j][None]), 2.0).item()
                        for i, j in real])
    assert kd_loss(student, teacher, 2.0, mask).item() == pytest.approx(expected, rel=1e-5)


def test_public_logits_of_a_causal_lm_are_its_top_k_at_every_position_in_chunks(monkeypatch):
    import fedray.foundation.distill as distill
    from fedray.types import payload_bytes

    model = tiny_llama(0).eval()
    ids = public_rows()
    data = public_tensor("causal_lm", ids, "cpu")
    with torch.no_grad():
        full = model(input_ids=data.clamp_min(0), attention_mask=(data >= 0).long()).logits.numpy()
    monkeypatch.setattr(distill, "_MAX_LOGITS", 3 * 16 * 257)  # three rows per pass
    got = public_logits(model, "causal_lm", data, top_k=5, temperature=1.0)
    want = top_k(full, 5, 1.0)
    assert got.values.shape == (8, 16, 5) and got.indices.dtype == np.int64
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert payload_bytes(got) == 8 * 16 * 5 * (4 + 8)  # what the round counts for the payload


def test_kd_on_text_lowers_the_clients_kd_loss_on_the_public_set():
    """Same seed, same local data: the KD term pulls the student's next-token
    distributions on the public rows towards the teacher's."""
    from fedray.client.train import train_local
    from fedray.config.schema import TrainConfig
    from fedray.models.tasks import CausalLM

    ids = public_rows(seed=1, rows=16)
    public = public_tensor("causal_lm", ids, "cpu")
    sharp = tiny_llama(7, initializer_range=0.5)  # a teacher far from the student's near-uniform start
    teacher = public_logits(sharp, "causal_lm", public, top_k=8, temperature=1.0)
    local = torch.tensor(np.random.default_rng(3).integers(0, 256, (16, 16)), dtype=torch.long)
    cfg = TrainConfig(local_steps=15, batch_size=8, lr=0.1)

    def kd_after(weight):
        student = tiny_llama(0)
        regularizer = kd_regularizer("causal_lm", public, teacher, weight, 1.0, 8) if weight else None
        train_local(student, CausalLM(), local, cfg, seed=0, regularizer=regularizer)
        return kd_of(student)

    def kd_of(model):
        with torch.no_grad():
            logits = model.eval()(input_ids=public.clamp_min(0), attention_mask=(public >= 0).long()).logits
        return kd_loss(logits, teacher, 1.0, public >= 0).item()

    before = kd_of(tiny_llama(0))
    with_kd, without = kd_after(1.0), kd_after(0.0)
    assert with_kd < 0.9 * before and with_kd < 0.9 * without  # measured: 0.43 against 0.52 and 0.52
