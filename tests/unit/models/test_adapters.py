"""LoRA adapter layouts: truncation, padding and stacking against hand computations."""

import numpy as np
import pytest

from fedray.config.schema import PeftConfig
from fedray.models.adapters import LoraLayout, LoraModule, client_ranks, lora_layout
from fedray.types import ParamSpec

LAYOUT = LoraLayout((LoraModule("m0", d_in=5, d_out=3), LoraModule("m1", d_in=4, d_out=6)), rank=4, scaling=2.0)


def adapter(rank, seed):
    return np.random.default_rng(seed).standard_normal(LAYOUT.num_params(rank)).astype(np.float32)


def components(flat, rank_limit=None):
    """scaling * sum_i b_i a_i^T per module, written out component by component."""
    out = []
    for a, b in LAYOUT.factors(flat):
        r = a.shape[0] if rank_limit is None else rank_limit
        out.append(LAYOUT.scaling * sum(np.outer(b[:, i], a[i]) for i in range(r)))
    return out


def test_factors_follow_the_flat_order_a_then_b():
    flat = np.arange(LAYOUT.num_params(), dtype=np.float32)
    (a0, b0), (a1, b1) = LAYOUT.factors(flat)
    assert a0.shape == (4, 5) and b0.shape == (3, 4) and a1.shape == (4, 4) and b1.shape == (6, 4)
    assert a0[0, 0] == 0 and b0[0, 0] == 20 and a1[0, 0] == 32 and b1[-1, -1] == flat[-1]
    np.testing.assert_array_equal(LAYOUT.assemble(LAYOUT.factors(flat)), flat)


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_truncation_keeps_the_leading_components(rank):
    full = adapter(4, seed=rank)
    low = LAYOUT.truncate(full, rank)
    assert low.size == LAYOUT.num_params(rank) and LAYOUT.rank_of(low) == rank
    for got, want in zip(LAYOUT.deltas(low).values(), components(full, rank_limit=rank)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_pad_then_truncate_round_trips_and_pads_with_zeros(rank):
    low = adapter(rank, seed=7)
    padded = LAYOUT.pad(low, 4)
    np.testing.assert_array_equal(LAYOUT.truncate(padded, rank), low)
    for (a, b), (a_low, b_low) in zip(LAYOUT.factors(padded), LAYOUT.factors(low)):
        assert not a[rank:].any() and not b[:, rank:].any()
        np.testing.assert_array_equal(a[:rank], a_low)
    # zero components change nothing: the padded adapter has the same product
    for got, want in zip(LAYOUT.deltas(padded).values(), LAYOUT.deltas(low).values()):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_stack_is_exactly_the_weighted_sum_of_products():
    ranks, weights = [1, 2, 4], [30.0, 10.0, 20.0]
    adapters = [adapter(r, seed=i) for i, r in enumerate(ranks)]
    stacked = LAYOUT.stack(list(zip(weights, adapters)))
    assert LAYOUT.rank_of(stacked) == sum(ranks)
    expected = [
        sum(w / sum(weights) * d for w, d in zip(weights, per_module))
        for per_module in zip(*[LAYOUT.deltas(x).values() for x in adapters])
    ]
    for got, want in zip(LAYOUT.deltas(stacked).values(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_averaging_a_and_b_separately_is_not_the_product_average():
    """Why `stack` exists: FedAvg of the factors is not FedAvg of the updates."""
    x, y = adapter(4, seed=1), adapter(4, seed=2)
    mean_of_factors = LAYOUT.deltas((x + y) / 2)["m0"]
    mean_of_products = (LAYOUT.deltas(x)["m0"] + LAYOUT.deltas(y)["m0"]) / 2
    assert np.abs(mean_of_factors - mean_of_products).max() > 0.1
    np.testing.assert_allclose(LAYOUT.deltas(LAYOUT.stack([(1, x), (1, y)]))["m0"], mean_of_products, rtol=1e-5, atol=1e-6)


def test_layout_is_read_from_peft_parameter_names():
    prefix = "base_model.model.model.layers.0.self_attn"
    names = [f"{prefix}.{m}.lora_{f}.default.weight" for m in ("q_proj", "v_proj") for f in "AB"]
    spec = ParamSpec(tuple(names), ((8, 64), (64, 8), (8, 64), (32, 8)))
    layout = lora_layout(spec, PeftConfig(r=8, alpha=32))
    assert [m.path for m in layout.modules] == [f"{prefix}.q_proj", f"{prefix}.v_proj"]
    assert [(m.d_in, m.d_out) for m in layout.modules] == [(64, 64), (64, 32)]
    assert layout.rank == 8 and layout.scaling == 4.0 and layout.num_params() == spec.num_params


def test_a_trainable_tensor_that_is_not_lora_is_refused():
    spec = ParamSpec(("model.lm_head.weight",), ((10, 4),))
    with pytest.raises(ValueError, match="model.lm_head.weight is not a LoRA A or B weight"):
        lora_layout(spec, PeftConfig())


@pytest.mark.parametrize(
    "peft, sizes, expected",
    [
        (PeftConfig(r=8), [5, 1, 9], [8, 8, 8]),
        (PeftConfig(r=8, rank_rule="round_robin", rank_tiers=[2, 8]), [5, 1, 9, 3, 3], [2, 8, 2, 8, 2]),
        (PeftConfig(r=8, rank_rule="by_examples", rank_tiers=[8, 2, 4]), [50, 10, 90, 30, 70, 20], [4, 2, 8, 4, 8, 2]),
        (PeftConfig(r=8, rank_rule="by_examples", rank_tiers=[2], client_ranks=[1, 2, 8]), [5, 6, 7], [1, 2, 8]),
    ],
)
def test_rank_rules(peft, sizes, expected):
    assert client_ranks(peft, np.array(sizes)).tolist() == expected


def test_a_tiered_rule_without_tiers_says_so():
    with pytest.raises(ValueError, match=r"rank_rule=by_examples needs model.peft.rank_tiers"):
        client_ranks(PeftConfig(rank_rule="by_examples"), np.array([1, 2]))
    with pytest.raises(ValueError, match="Unknown rank rule 'biggest'"):
        client_ranks(PeftConfig(rank_rule="biggest"), np.array([1, 2]))
