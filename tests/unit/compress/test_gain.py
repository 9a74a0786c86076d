"""The continuous-rate codec: bytes monotone in l, errors between the anchors', budgets met."""

import numpy as np
import pytest

from fedray.compress import CODECS
from fedray.compress.gain import Rows, encoded_bytes, rate_for_budget, row_table
from fedray.types import Context, ParamSpec, payload_bytes

SPEC = ParamSpec(("0.weight", "0.bias", "2.weight", "2.bias"), ((64, 64), (64,), (10, 64), (10,)))
LORA = ParamSpec(("q_proj.lora_A.default.weight", "q_proj.lora_B.default.weight"), ((4, 32), (48, 4)))


def update(spec, seed=0):
    """Rows of very different scales, as real updates have."""
    rng = np.random.default_rng(seed)
    rows = Rows.of(row_table(spec, spec.num_params))
    scale = np.repeat(rng.lognormal(0, 1.5, size=rows.lengths.size), rows.lengths)
    x = np.empty(spec.num_params, np.float32)
    ordered = (rng.normal(size=spec.num_params) * scale).astype(np.float32)
    if rows.order is None:
        return ordered
    x[rows.order] = ordered
    return x


def encode(x, rate, spec=SPEC, bits=(2, 4, 8), **config):
    t = CODECS.build("gain", rate=rate, bits=list(bits), error_feedback=False)
    context = Context(1, 0, 0, 1, spec=spec, config=config)
    payload, _ = t.apply(x, (), x, context)
    return payload, t.decode(payload, context)


def error(x, decoded):
    return float(np.sum((decoded - x) ** 2) / np.sum(x**2))


@pytest.mark.parametrize("spec", [SPEC, LORA, None], ids=["mlp", "lora", "no-layout"])
def test_bytes_are_monotone_in_l_and_match_the_closed_form(spec):
    x = update(spec or SPEC)
    sizes = []
    for rate in np.linspace(0, 1, 21):
        payload, decoded = encode(x, float(rate), spec)
        sizes.append(payload_bytes(payload))
        rows = Rows.of(payload.table)
        ordered = x if rows.order is None else x[rows.order]
        assert sizes[-1] == encoded_bytes(rows.absmax(ordered), rows.lengths, len(payload.table), payload.step)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert sizes[-1] < x.nbytes / 3.5  # 8 bits at the top anchor, plus row headers


def test_error_at_a_fractional_l_lies_between_its_anchors():
    x = update(SPEC, seed=1)
    errors = {rate: error(x, encode(x, rate)[1]) for rate in (0.0, 0.25, 0.5, 0.75, 1.0)}
    # anchors at 2, 4, 8 bits sit at l = 0, 0.5, 1
    assert errors[0.0] > errors[0.25] > errors[0.5] > errors[0.75] > errors[1.0]
    assert errors[1.0] < 5e-3  # 8 bits for the widest row


def test_lora_b_rows_are_its_rank_columns():
    table = row_table(LORA, LORA.num_params)
    assert table.tolist() == [[4, 32, 0], [4, 48, 1]]  # A: 4 rows of 32; B: 4 columns of 48
    x = update(LORA)
    _, decoded = encode(x, 1.0, LORA)
    assert error(x, decoded) < 1e-3
    no_layout = row_table(None, 1000)
    assert no_layout.tolist() == [[3, 256, 0], [1, 232, 0]]


@pytest.mark.parametrize("budget", [150, 400, 900, 2000])
def test_rate_auto_takes_the_largest_l_within_the_budget(budget):
    x = update(SPEC, seed=2)
    payload, _ = encode(x, "auto", upload_bytes=budget)
    assert payload_bytes(payload) <= budget
    rows = Rows.of(row_table(SPEC, x.size))
    anchors = np.array([1.0, 7.0, 127.0])
    rate = rate_for_budget(rows.absmax(x), rows.lengths, 4, anchors, budget)
    assert payload_bytes(encode(x, rate)[0]) == payload_bytes(payload)
    if rate < 1.0:  # a little more rate no longer fits
        assert payload_bytes(encode(x, min(1.0, rate + 1e-3))[0]) > budget


def test_rate_auto_without_a_budget_is_the_top_rate_and_a_tiny_budget_the_lowest():
    x = update(SPEC, seed=3)
    assert payload_bytes(encode(x, "auto")[0]) == payload_bytes(encode(x, 1.0)[0])
    assert payload_bytes(encode(x, "auto", upload_bytes=1)[0]) == payload_bytes(encode(x, 0.0)[0])


def test_an_all_zero_update_sends_only_headers():
    payload, decoded = encode(np.zeros(SPEC.num_params, np.float32), 0.7)
    assert not decoded.any() and payload.widths.size == 0


@pytest.mark.parametrize("args,match", [
    ({"rate": 1.5}, r"rate must be in \[0, 1\]"),
    ({"rate": "fast"}, "or 'auto'"),
    ({"bits": [4]}, "at least two increasing"),
    ({"bits": [1, 8]}, r"in \[2, 16\]"),
    ({"bits": [8, 4]}, "increasing"),
    ({"target_s": 0.0}, "target_s must be > 0"),
])
def test_bad_arguments_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        CODECS.build("gain", **args)
