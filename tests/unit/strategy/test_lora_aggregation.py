"""LoRA aggregation on the server: padded means across ranks, exact stacks, the choice of exchange."""

import numpy as np
import pytest

from fedray.config import load_config
from fedray.models.adapters import LoraLayout, LoraModule
from fedray.strategy.exchange import FlatExchange
from fedray.strategy.lora import PaddedMean, RankPaddedExchange, StackedAdapters, StackExchange, build_exchange

LAYOUT = LoraLayout((LoraModule("m0", 5, 3), LoraModule("m1", 4, 6)), rank=4, scaling=0.5)
RANKS = np.array([4, 2, 1, 4])


def update(cid):
    return np.random.default_rng(cid).standard_normal(LAYOUT.num_params(int(RANKS[cid]))).astype(np.float32)


def test_padded_mean_matches_a_hand_computation_in_any_arrival_order():
    weights = {0: 10.0, 1: 30.0, 2: 20.0, 3: 40.0}
    expected = sum(w * LAYOUT.pad(update(c), 4) for c, w in weights.items() if c != 3) / 60.0
    for arrival in ([0, 1, 2, 3], [2, 3, 1, 0]):
        agg = PaddedMean(LAYOUT, RANKS)
        agg.reset([0, 1, 2, 3])
        for cid in arrival:
            agg.skip(cid) if cid == 3 else agg.add(cid, weights[cid], update(cid))
        np.testing.assert_allclose(agg.result(), expected, rtol=1e-6)
        assert agg.num_added == 3


def test_padded_mean_leaves_components_no_client_trained_unchanged():
    agg = PaddedMean(LAYOUT, RANKS)
    agg.reset([1, 2])
    agg.add(2, 1.0, update(2))
    agg.add(1, 1.0, update(1))
    (a, b), _ = LAYOUT.factors(agg.result())
    assert not a[2:].any() and not b[:, 2:].any()  # ranks 1 and 2 never touch components 3, 4


def test_stacked_adapters_are_start_plus_update_in_client_order():
    start = np.random.default_rng(9).standard_normal(LAYOUT.num_params()).astype(np.float32)
    agg = StackedAdapters(LAYOUT, RANKS)
    agg.start = {r: LAYOUT.truncate(start, r) for r in (1, 2, 4)}
    agg.reset([2, 0, 1])
    agg.add(1, 3.0, update(1))
    agg.skip(0)
    agg.add(2, 1.0, update(2))
    expected = LAYOUT.stack([(1.0, agg.start[1] + update(2)), (3.0, agg.start[2] + update(1))])
    np.testing.assert_array_equal(agg.result(), expected)
    assert agg.num_added == 2 and LAYOUT.rank_of(agg.result()) == 3


def test_nothing_to_stack_is_an_error():
    agg = StackedAdapters(LAYOUT, RANKS)
    agg.reset([0])
    agg.skip(0)
    with pytest.raises(ValueError, match="no client update to aggregate"):
        agg.result()


@pytest.mark.parametrize(
    "overrides, ranks, kind",
    [
        ([], None, FlatExchange),
        (["model.peft.r=4"], [4, 4, 4, 4], FlatExchange),  # one rank: the core's fast path
        (["model.peft.r=4"], [4, 2, 1, 4], RankPaddedExchange),
        (["model.peft.r=4", "model.peft.aggregation=stack"], [4, 4, 4, 4], StackExchange),
    ],
)
def test_the_exchange_follows_the_config(overrides, ranks, kind):
    cfg = load_config(None, ["clients.num_clients=4", "server.clients_per_round=4", *overrides])
    ranks = None if ranks is None else np.array(ranks)
    exchange = build_exchange(cfg, LAYOUT.num_params(), None if ranks is None else LAYOUT, ranks, lambda c: 0)
    assert type(exchange) is kind


def test_stacking_takes_no_server_transform():
    cfg = load_config(None, ["model.peft.aggregation=stack", "server.strategy.name=fedadam"])
    with pytest.raises(ValueError, match="server.strategy.name must be fedavg, got 'fedadam'"):
        build_exchange(cfg, LAYOUT.num_params(), LAYOUT, np.full(10, 4), lambda c: 0)
    cfg = load_config(None, ["model.peft.aggregation=sum"])
    with pytest.raises(ValueError, match="Unknown adapter aggregation 'sum'"):
        build_exchange(cfg, LAYOUT.num_params(), LAYOUT, np.full(10, 4), lambda c: 0)
