"""Codec configuration: every bad input one clear error naming its key, exit status 2."""

import numpy as np
import pytest

from fedray.cli.main import main
from fedray.compress import build_codecs
from fedray.compress.downlink import Broadcast, BroadcastDecoder
from fedray.compress.rate import BUDGET_KEY, upload_budgets, wants_budget
from fedray.config import ConfigError, load_config
from fedray.launcher import prepare
from fedray.strategy.algorithm import build_algorithm
from fedray.types import Context


def cfg(*overrides):
    return load_config(None, list(overrides))


def test_none_builds_nothing_and_a_codec_ends_the_client_chain():
    assert build_codecs(cfg()) == (None, None)
    codecs = build_codecs(cfg("clients.codec.name=int8", "server.codec.name=fp16"))
    algorithm = build_algorithm(cfg("clients.transforms=[{name: clip_by_global_norm, args: {max_norm: 1.0}}]"),
                                codec=codecs.uplink)
    x = np.full(1000, 0.1, np.float32)
    payload, _ = algorithm.client_transforms.apply(x, algorithm.client_transforms.init(x), x, Context(1, 0, 0, 1))
    decoded = algorithm.decode(payload, Context(1, 0, 0, 1))
    assert np.linalg.norm(decoded) == pytest.approx(1.0, rel=1e-2)  # clipped, then int8


@pytest.mark.parametrize("overrides,expected", [
    (["clients.codec.name=zip"], "clients.codec: Unknown codec 'zip'; choose one of ['bf16', 'content'"),
    (["clients.codec.name=top_k", "clients.codec.args={fraction: 0}"], r"clients.codec: fraction must be a fraction in (0, 1], got 0"),
    (["clients.codec.name=random_k", "clients.codec.args={fraction: 1.5}"], "fraction must be a fraction in (0, 1], got 1.5"),
    (["clients.codec.name=gain", "clients.codec.args={bits: [2, 32]}"], "clients.codec: bits must list"),
    (["clients.codec.name=qsgd", "clients.codec.args={levels: 0}"], "clients.codec: levels must be in [1, 32768]"),
    (["clients.codec.name=int8", "clients.codec.args={block: 0}"], "clients.codec: block must be >= 1"),
    (["clients.codec.name=int8", "clients.codec.args={bits: 4}"], "clients.codec: codec 'int8': unknown argument 'bits'"),
    (["server.codec.name=top_k"], "server.codec: 'top_k' cannot encode the broadcast parameters"),
    (["server.codec.name=gain", "server.codec.args={rate: auto}"], "server.codec: rate: auto sizes client uploads"),
    (["clients.codec.name=int8", "clients.transforms=[{name: 'fedray.compress.quantize:fp16'}]"],
     "clients.transforms[0] encodes the update (it has a decode), so it must be the last step"),
    (["clients.codec.name=content", "clients.codec.args={rules: [{match: 'lora_A', codec: {name: int8}}]}"],
     "clients.codec.args.rules[0].match 'lora_A' matches no tensor (names: 0.weight, 0.bias, 2.weight, 2.bias)"),
])
def test_bad_codec_config_is_a_config_error_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as err:
        prepare(cfg(*overrides))
    assert expected in str(err.value)


def test_an_encoded_broadcast_cannot_feed_exact_stacking():
    with pytest.raises(ConfigError, match="server.codec must be none with model.peft.aggregation=stack"):
        build_codecs(cfg("server.codec.name=fp16", "model.peft={r: 2, aggregation: stack}"))


def test_all_codec_problems_at_once_and_exit_status_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("clients:\n  codec: {name: top_k, args: {fraction: -1}}\nserver:\n  codec: {name: sign}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "clients.codec: fraction must be" in err and "server.codec: 'sign' cannot encode" in err
    assert str(path) in err and "Traceback" not in err


def test_upload_budgets_fill_the_wait_for_the_slowest():
    run = cfg("clients.codec.name=gain", "clients.codec.args={rate: auto}")
    assert wants_budget(run) and not wants_budget(cfg("clients.codec.name=gain"))
    down, up = np.array([8000.0, 8000.0, np.inf]), np.array([1000.0, 2000.0, np.inf])
    compute = np.array([1.0, 3.0, 0.5])
    budgets = upload_budgets(run, down, up, compute)({0: 1000, 1: 1000, 2: 1000})
    # client 1 is the slowest (1 ms download + 3 s): the round lasts 3.001 s before uploads
    assert budgets[1][BUDGET_KEY] == 0.0
    assert budgets[0][BUDGET_KEY] == pytest.approx(2.0 * 1000 * 125)
    assert budgets[2][BUDGET_KEY] == np.inf
    fixed = upload_budgets(cfg("clients.codec.name=gain", "clients.codec.args={rate: auto, target_s: 5.0}"),
                           down, up, compute)({1: 0})
    assert fixed[1][BUDGET_KEY] == pytest.approx(2.0 * 2000 * 125)


def test_an_actor_decodes_each_broadcast_once():
    codecs = build_codecs(cfg("server.codec.name=int8"))
    decoder = BroadcastDecoder(codecs.downlink, seed=0, keep=2)
    params = np.linspace(-1, 1, 600).astype(np.float32)
    encoded, _ = codecs.downlink.apply(params, (), params, Context(3, None, 0))
    first = {"params": Broadcast(encoded, ("a", 1), 3), "control": np.ones(2, np.float32)}
    out, _, decodes = decoder.decode(first)
    assert decodes == 1 and out["control"] is first["control"]
    np.testing.assert_allclose(out["params"], params, atol=2 / 127)
    again, seconds, decodes = decoder.decode(dict(first))
    assert decodes == 0 and seconds == 0.0 and again["params"] is out["params"]
    for key in (2, 3):  # two newer payloads push the first out
        decoder.decode({"params": Broadcast(encoded, ("a", key), 3)})
    assert decoder.decode(first)[2] == 1
