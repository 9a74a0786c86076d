import numpy as np
import torch

from fedray.config.schema import ModelConfig
from fedray.data.federated import DataInfo
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec, set_flat

INFO = DataInfo("classification", 64, 10)


def test_flat_round_trip_through_a_read_only_view():
    model = build_model(ModelConfig(hidden=[16, 8]), INFO, seed=0)
    spec = param_spec(model)
    assert spec.num_params == 64 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10
    flat = np.arange(spec.num_params, dtype=np.float32)
    flat.setflags(write=False)  # as the object store hands it over
    set_flat(model, spec, flat)
    np.testing.assert_array_equal(get_flat(model, spec), flat)
    np.testing.assert_array_equal(model[0].bias.detach().numpy(), flat[64 * 16 : 64 * 16 + 16])


def test_build_is_deterministic_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = get_flat(*(lambda m: (m, param_spec(m)))(build_model(ModelConfig(), INFO, seed=1)))
    after = torch.rand(1)
    b = get_flat(*(lambda m: (m, param_spec(m)))(build_model(ModelConfig(), INFO, seed=1)))
    c = get_flat(*(lambda m: (m, param_spec(m)))(build_model(ModelConfig(), INFO, seed=2)))
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_only_trainable_parameters_travel():
    model = build_model(ModelConfig(hidden=[4]), INFO, seed=0)
    model[0].weight.requires_grad_(False)
    assert param_spec(model).names == ("0.bias", "2.weight", "2.bias")


def test_get_delta_is_params_minus_base_in_place():
    from fedray.models.flat import get_delta

    model = build_model(ModelConfig(hidden=[8]), INFO, seed=0)
    spec = param_spec(model)
    base = np.random.default_rng(0).standard_normal(spec.num_params).astype(np.float32)
    out = np.full(spec.num_params, np.nan, dtype=np.float32)
    result = get_delta(model, spec, base, out)
    assert result is out
    np.testing.assert_array_equal(out, get_flat(model, spec) - base)
