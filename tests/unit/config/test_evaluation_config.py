"""`server.evaluation` and `data.client_test_fraction`: every bad combination names its keys."""

import pytest

from fedray.config import ConfigError, load_config
from fedray.config.schema import EvalWhere


def test_client_evaluation_without_a_server_split_is_a_valid_config():
    cfg = load_config(None, ["data.test_fraction=0", "data.client_test_fraction=0.2",
                             "server.evaluation.where=clients", "server.evaluation.fraction=0.5"])
    assert cfg.server.evaluation.where is EvalWhere.clients and cfg.server.evaluation.fraction == 0.5
    assert load_config(None, []).server.evaluation.fraction == "all"


@pytest.mark.parametrize("overrides, message", [
    (["server.evaluation.where=clients"], r"where=clients evaluates on the clients' held-out rows: "
                                          r"set data.client_test_fraction > 0 \(got 0.0\)"),
    (["data.test_fraction=0"], r"where=server needs a server split: data.test_fraction=0"),
    (["server.evaluation.where=both", "data.client_test_fraction=0.1", "data.test_fraction=0"],
     r"where=both needs a server split"),
    (["server.evaluation.fraction=some"], r"server.evaluation.fraction must be a number in \(0, 1\] or 'all', got 'some'"),
    (["server.evaluation.fraction=1.5"], r"server.evaluation.fraction must be in \(0, 1\] or 'all', got 1.5"),
    (["server.evaluation.every=0"], r"server.evaluation.every must be >= 1, got 0"),
    (["server.evaluation.threshold=2"], r"server.evaluation.threshold must be an accuracy in \[0, 1\], got 2"),
    (["data.client_test_fraction=1"], r"data.client_test_fraction must be in \[0, 1\), got 1"),
    (["server.evaluation.where=clients", "data.client_test_fraction=0.2", "server.mode=async",
      "server.clients_per_round=4", "server.buffer_size=2"], r"where=clients/both needs server.mode=sync"),
    (["server.evaluation.where=clients", "data.client_test_fraction=0.2", "server.contribution.name=loo"],
     r"server.contribution.name=loo values updates on the server's split"),
])
def test_bad_evaluation_configs_name_their_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("extra", [
    ["server.secure_aggregation={name: secagg_plus}"],
    ["server.privacy={name: fixed_clip, args: {clip_norm: 1.0, noise_multiplier: 0.5}}"],
    ["train.dp={noise_multiplier: 1.1, max_grad_norm: 1.0, delta: 1e-5}"],
])
def test_client_evaluation_composes_with_secure_aggregation_and_dp(extra):
    cfg = load_config(None, ["data.client_test_fraction=0.2", "server.evaluation.where=both", *extra])
    assert cfg.server.evaluation.on_clients and cfg.server.evaluation.on_server
