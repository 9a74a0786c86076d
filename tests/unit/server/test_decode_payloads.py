"""The server decodes each update before checking it; a payload its codec cannot read is a
rejected update, never a crash of the run."""

import types

import numpy as np

from fedray.compress import build_codecs
from fedray.config import load_config
from fedray.server.context import RoundTally
from fedray.server.loop import _decode
from fedray.strategy.algorithm import build_algorithm
from fedray.types import ClientResult, Context


def test_a_payload_that_cannot_be_decoded_is_a_problem_and_decoding_is_timed():
    cfg = load_config(None, ["clients.codec.name=int8"])
    algorithm = build_algorithm(cfg, codec=build_codecs(cfg).uplink)
    ctx = types.SimpleNamespace(at=lambda server_round, cid: Context(server_round, cid, 0))
    x = np.linspace(-1, 1, 300).astype(np.float32)
    payload, _ = algorithm.client_transforms.apply(x, algorithm.client_transforms.init(x), x, Context(1, 0, 0))
    tally = RoundTally()
    good = ClientResult(0, 1, 5, payloads={"delta": payload})
    update, problem = _decode(ctx, algorithm, good, tally)
    assert problem is None and np.max(np.abs(update - x)) <= 1 / 127
    bad = ClientResult(1, 1, 5, payloads={"delta": x})  # float32 where int8 blocks belong
    update, problem = _decode(ctx, algorithm, bad, tally)
    assert update is None and problem == "payload cannot be decoded: expected a payload of type Int8Blocks, got ndarray"
    assert tally.metrics["decode_s"] > 0
