"""Invariants of the codecs: error feedback conserves the update, QSGD is unbiased with
its variance bound, int8 and fp16 errors within their bounds, bytes are the arrays' sizes."""

import math

import numpy as np
import pytest

from fedray.compress import CODECS
from fedray.compress.bits import pack, pack_signed, unpack, unpack_signed
from fedray.compress.quantize import Int8Blocks
from fedray.types import Context, ParamSpec, payload_bytes

SPEC = ParamSpec(("0.weight", "0.bias", "2.weight", "2.bias"), ((64, 64), (64,), (10, 64), (10,)))
N = SPEC.num_params


def update(seed=0, n=N):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=n) * rng.lognormal(0, 1, size=n)).astype(np.float32)


def ctx(server_round=1, client=3, **kw):
    return Context(server_round, client, 0, 10, spec=SPEC, **kw)


def roundtrip(name, x, context=None, **args):
    t = CODECS.build(name, **args)
    payload, _ = t.apply(x, t.init(x), x, context or ctx())
    return payload, t.decode(payload, context or ctx())


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 13])
def test_bit_packing_round_trips(width):
    rng = np.random.default_rng(width)
    values = rng.integers(0, 1 << width, size=1001)
    packed = pack(values, width)
    assert packed.nbytes == math.ceil(1001 * width / 8)
    np.testing.assert_array_equal(unpack(packed, 1001, width), values)
    if width > 1:
        top = (1 << (width - 1)) - 1
        signed = rng.integers(-top, top + 1, size=77)
        np.testing.assert_array_equal(unpack_signed(pack_signed(signed, width), 77, width), signed)


def test_fp16_and_bf16_round_trip_within_their_precision():
    x = update()
    _, half = roundtrip("fp16", x)
    np.testing.assert_allclose(half, x, rtol=2.0**-11, atol=2.0**-24)
    _, brain = roundtrip("bf16", x)
    np.testing.assert_allclose(brain, x, rtol=2.0**-8, atol=0)
    assert half.dtype == brain.dtype == np.float32


@pytest.mark.parametrize("stochastic", [True, False])
def test_int8_blockwise_error_within_its_bound(stochastic):
    x = update()
    payload, decoded = roundtrip("int8", x, block=100, stochastic=stochastic)
    step = np.repeat(payload.scales, 100)[:N]  # absmax / 127 per block
    error = np.abs(decoded - x)
    assert np.all(error <= (step if stochastic else step / 2) * (1 + 1e-5) + 1e-12)
    assert payload.values.dtype == np.int8 and payload.num_bytes == N + 4 * math.ceil(N / 100)


def test_qsgd_is_unbiased_with_variance_within_its_bound():
    d, levels, draws = 64, 3, 3000
    x = update(1, d)
    t = CODECS.build("qsgd", levels=levels, bucket=d)
    samples = np.stack([t.decode(t.apply(x, (), x, ctx(server_round=r))[0], ctx(server_round=r))
                        for r in range(draws)])
    # variance bound of QSGD (Alistarh et al. 2017, Lemma 3.1)
    bound = min(d / levels**2, math.sqrt(d) / levels) * float(x @ x)
    squared = ((samples - x) ** 2).sum(axis=1)
    assert squared.mean() <= bound
    # unbiased: every coordinate's mean within 5 standard errors of the truth
    standard_error = samples.std(axis=0) / math.sqrt(draws) + 1e-7
    assert np.all(np.abs(samples.mean(axis=0) - x) <= 5 * standard_error)
    # the levels really are s + 1 points of ||x|| / s
    assert np.allclose(np.unique(np.abs(samples[0])) * levels / np.linalg.norm(x) % 1, 0, atol=1e-4)


@pytest.mark.parametrize("name,args", [("top_k", {"fraction": 0.02}), ("random_k", {"fraction": 0.05}),
                                       ("sign", {"block": 128}), ("gain", {"rate": 0.2})])
def test_error_feedback_conserves_sent_plus_residual(name, args):
    t = CODECS.build(name, **args)
    state = t.init(np.zeros(N, np.float32))
    total_in, total_sent = np.zeros(N, np.float64), np.zeros(N, np.float64)
    for r in range(1, 9):
        x = update(r)
        payload, state = t.apply(x, state, x, ctx(server_round=r))
        total_in += x
        total_sent += t.decode(payload, ctx(server_round=r))
    np.testing.assert_allclose(total_sent + state, total_in, atol=1e-4)
    assert np.abs(state).sum() > 0  # something really was held back


@pytest.mark.parametrize("name,args,expected", [
    ("none", {}, 4 * N),
    ("fp16", {}, 2 * N),
    ("bf16", {}, 2 * N),
    ("int8", {"block": 256}, N + 4 * math.ceil(N / 256)),
    ("qsgd", {"levels": 7, "bucket": 128}, 4 * math.ceil(N / 128) + math.ceil(N * 4 / 8) + 4),
    ("top_k", {"fraction": 0.01}, 8 * math.ceil(0.01 * N) + 4),
    ("random_k", {"fraction": 0.01}, 4 * math.ceil(0.01 * N) + 4),
    ("sign", {"block": 1000}, math.ceil(N / 8) + 4 * math.ceil(N / 1000) + 4),
])
def test_bytes_are_the_encoded_arrays_sizes(name, args, expected):
    payload, decoded = roundtrip(name, update(), **args)
    assert payload_bytes(payload) == expected
    assert decoded.shape == (N,) and decoded.dtype == np.float32


def test_random_draws_come_from_the_context():
    x = update()
    first, _ = roundtrip("int8", x)
    again, _ = roundtrip("int8", x)
    other, _ = roundtrip("int8", x, context=ctx(client=4))
    np.testing.assert_array_equal(first.values, again.values)
    assert not np.array_equal(first.values, other.values)
    # random-k: the server draws the same indices from the same (round, client)
    payload, decoded = roundtrip("random_k", x, fraction=0.1, error_feedback=True)
    kept = np.flatnonzero(decoded)
    np.testing.assert_array_equal(decoded[kept], x[kept])


def test_a_payload_that_is_not_the_codecs_is_a_value_error():
    t = CODECS.build("int8")
    with pytest.raises(ValueError, match="expected a payload of type Int8Blocks"):
        t.decode(np.zeros(3, np.float32), ctx())
    with pytest.raises(ValueError, match="scales for"):
        t.decode(Int8Blocks(np.zeros(600, np.int8), np.zeros(1, np.float32)), ctx())
    top = CODECS.build("top_k")
    bad = top.apply(update(), top.init(update()), update(), ctx())[0]
    with pytest.raises(ValueError, match="do not fit"):
        top.decode(type(bad)(bad.indices + N, bad.values, N), ctx())
