"""LoRA aggregation on the server: padded means across ranks, exact stacks, the choice of exchange."""

import numpy as np
import pytest

from fedray.config import load_config
from fedray.models.adapters import LoraLayout, LoraModule
from fedray.strategy.aggregate import InOrder, WeightedMean
from fedray.strategy.algorithm import build_algorithm
from fedray.strategy.exchange import FlatExchange
from fedray.strategy.lora import PaddedAggregator, RankPaddedExchange, StackedAdapters, StackExchange, build_exchange
from fedray.strategy.robust import median

LAYOUT = LoraLayout((LoraModule("m0", 5, 3), LoraModule("m1", 4, 6)), rank=4, scaling=0.5)
RANKS = np.array([4, 2, 1, 4])


def padded_mean():
    return PaddedAggregator(LAYOUT, RANKS, WeightedMean(LAYOUT.num_params()))


def exchange_for(cfg, ranks):
    layout = None if ranks is None else LAYOUT
    return build_exchange(cfg, build_algorithm(cfg), LAYOUT.num_params(), layout, ranks, lambda c: 0)


def update(cid):
    return np.random.default_rng(cid).standard_normal(LAYOUT.num_params(int(RANKS[cid]))).astype(np.float32)


def test_padded_mean_matches_a_hand_computation_in_any_arrival_order():
    weights = {0: 10.0, 1: 30.0, 2: 20.0, 3: 40.0}
    expected = sum(w * LAYOUT.pad(update(c), 4) for c, w in weights.items() if c != 3) / 60.0
    for arrival in ([0, 1, 2, 3], [2, 3, 1, 0]):
        stream, agg = InOrder(), padded_mean()
        stream.reset([0, 1, 2, 3])
        agg.reset()
        for cid in arrival:  # client 3 fails: it arrives with nothing
            for released, item in stream.arrive(cid, None if cid == 3 else update(cid)):
                if item is not None:
                    agg.add(released, weights[released], item)
        np.testing.assert_allclose(agg.result()[0], expected, rtol=1e-6)
        assert agg.num_added == 3


def test_padded_mean_leaves_components_no_client_trained_unchanged():
    agg = padded_mean()
    agg.reset()
    agg.add(2, 1.0, update(2))
    agg.add(1, 1.0, update(1))
    (a, b), _ = LAYOUT.factors(agg.result()[0])
    assert not a[2:].any() and not b[:, 2:].any()  # ranks 1 and 2 never touch components 3, 4


def test_a_robust_aggregator_sees_the_padded_updates():
    agg = PaddedAggregator(LAYOUT, RANKS, median(LAYOUT.num_params()))
    agg.reset(agg.init())
    for cid in (0, 1, 2):
        agg.add(cid, 1.0, update(cid))
    padded = np.stack([LAYOUT.pad(update(c), 4) for c in (0, 1, 2)])
    np.testing.assert_array_equal(agg.result()[0], np.median(padded, axis=0).astype(np.float32))


def test_stacked_adapters_are_start_plus_update_in_the_order_added():
    start = np.random.default_rng(9).standard_normal(LAYOUT.num_params()).astype(np.float32)
    agg = StackedAdapters(LAYOUT, RANKS)
    agg.start_from(start)
    agg.reset()
    agg.add(1, 3.0, update(1))
    agg.add(2, 1.0, update(2))
    expected = LAYOUT.stack([(3.0, LAYOUT.truncate(start, 2) + update(1)), (1.0, LAYOUT.truncate(start, 1) + update(2))])
    np.testing.assert_array_equal(agg.result()[0], expected)
    assert agg.num_added == 2 and LAYOUT.rank_of(agg.result()[0]) == 3


def test_nothing_to_stack_is_an_error():
    agg = StackedAdapters(LAYOUT, RANKS)
    agg.reset()
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
    assert type(exchange_for(cfg, ranks)) is kind


@pytest.mark.parametrize("override, message", [
    ("server.strategy.name=fedadam", "server.strategy.name must be fedavg with no server.transforms, got 'fedadam'"),
    ("server.aggregator.name=median", "server.aggregator.name must be weighted_mean, got 'median'"),
    ("clients.objective=[{name: scaffold}]", "same adapter layout"),
])
def test_stacking_takes_no_server_step_robust_aggregator_or_layout_bound_term(override, message):
    cfg = load_config(None, ["model.peft.aggregation=stack", override])
    with pytest.raises(ValueError, match=message):
        exchange_for(cfg, np.full(10, 4))


def test_mixed_ranks_refuse_scaffold_and_unknown_aggregations_are_named():
    cfg = load_config(None, ["server.strategy.name=scaffold", "clients.num_clients=4", "server.clients_per_round=4",
                             "model.peft.r=4"])
    with pytest.raises(ValueError, match="every client must train the same adapter layout; model.peft gives "
                                         r"the clients ranks \[1, 2, 4\]"):
        exchange_for(cfg, RANKS)
    cfg = load_config(None, ["model.peft.aggregation=sum"])
    with pytest.raises(ValueError, match="Unknown adapter aggregation 'sum'"):
        exchange_for(cfg, np.full(10, 4))
