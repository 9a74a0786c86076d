"""Building the run's algorithm from config: components, their arguments, all errors at once."""

import numpy as np
import pytest

from fedray.config import ConfigError, load_config
from fedray.strategy.algorithm import KeptState, build_algorithm, initial_client_state
from fedray.types import Context


def test_the_chains_and_terms_come_from_config_in_order():
    cfg = load_config(None, [
        "server.strategy={name: fedprox, args: {mu: 0.1}}",
        "clients.transforms=[{name: clip_by_global_norm, args: {max_norm: 1.0}}]",
        "server.transforms=[{name: scale, args: {factor: 0.5}}]",
        "server.aggregator={name: trimmed_mean, args: {beta: 0.2}}",
    ])
    algorithm = build_algorithm(cfg)
    assert len(algorithm.terms) == 1
    ctx = Context(1, 0, 0)
    update = np.array([3.0, 4.0], dtype=np.float32)
    clipped, _ = algorithm.client_transforms.apply(update, algorithm.client_transforms.init(update), update, ctx)
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-6)
    step, _ = algorithm.server_transforms.apply(update, algorithm.server_transforms.init(update), update, ctx)
    np.testing.assert_allclose(step, [1.5, 2.0])  # server.transforms, then fedprox's identity step
    aggregator = algorithm.aggregator(2)
    aggregator.reset(aggregator.init())
    assert aggregator.num_added == 0


def test_every_bad_component_is_reported_at_once_with_its_key():
    cfg = load_config(None, [
        "server.strategy={name: fedadam, args: {betaa: 0.9}}",
        "server.aggregator={name: krum, args: {num_malicious: 2}}",
        "server.clients_per_round=5",
        "clients.transforms=[{name: clip_by_global_norm, args: {max_norm: 0}}, {name: nope}]",
        "clients.objective=[{name: proximal, args: {mu: lots}}]",
        "server.transforms=[{name: os:getcwd}]",
    ])
    with pytest.raises(ConfigError) as err:
        build_algorithm(cfg)
    problems = err.value.problems
    assert len(problems) == 6, problems
    expected = [
        "server.strategy: strategy 'fedadam': unknown argument 'betaa'",
        "clients.transforms[0]: max_norm must be > 0, got 0",
        "clients.transforms[1]: Unknown update transform 'nope'",
        "server.transforms[0]: update transform 'os:getcwd' is not a factory fedray may call: module 'os' "
        "is part of Python's standard library",
        "clients.objective[0]: objective term 'proximal': argument 'mu' must be float, got 'lots'",
        "server.aggregator: krum with num_malicious=2 needs more than 2f + 2 = 6 updates per round, "
        "but server.clients_per_round is 5",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)


def test_kept_state_is_empty_unless_something_is_kept():
    params = np.zeros(3, np.float32)
    plain = initial_client_state(build_algorithm(load_config(None, [])), params)
    assert plain.is_empty()
    scaffold = initial_client_state(build_algorithm(load_config(None, ["server.strategy.name=scaffold"])), params)
    assert not scaffold.is_empty() and np.array_equal(scaffold.terms[0], params)
    assert not KeptState({"state": {}}, (), ()).is_empty()
