"""Bad privacy input: one clear error naming the key and the file, exit 2, before Ray starts;
and the Poisson selector."""

import numpy as np
import pytest

from fedray.cli.main import main
from fedray.config.schema import SelectionConfig
from fedray.selection import SELECTORS, SelectionRequest

DP = "server.privacy={name: fixed_clip, args: {clip_norm: 1.0, noise_multiplier: 1.0}}"
SECAGG = "server.secure_aggregation={name: secagg_plus, args: {threshold: 3, num_neighbours: 4}}"


@pytest.mark.parametrize("overrides, expected", [
    (["server.privacy={name: fixed_clip, args: {clip_norm: 1.0, noise_multiplier: -0.5}}"],
     "server.privacy: noise_multiplier must be >= 0, got -0.5"),
    (["server.privacy={name: fixed_clip, args: {clip_norm: 0.0, noise_multiplier: 1.0}}"],
     "server.privacy: clip_norm must be a finite number > 0, got 0.0"),
    ([DP.replace("noise_multiplier: 1.0", "noise_multiplier: 1.0, delta: 1.0")],
     "server.privacy: delta must be in (0, 1), got 1.0"),
    (["server.privacy={name: fixed_clip, args: {clip_norm: 1.0, target_epsilon: 1e-6, delta: 1e-5}}",
      "clients.num_clients=100", "server.rounds=50", "server.selection.name=poisson"],
     "server.privacy: target_epsilon=1e-06 cannot be met in 50 round(s)"),
    (["server.privacy={name: fixed_clip, args: {clip_norm: 1.0, noise_multiplier: 0.5, target_epsilon: 0.1}}",
      "clients.num_clients=100"], "server.privacy: target_epsilon=0.1 cannot be met: one round"),
    ([SECAGG.replace("threshold: 3", "threshold: 5")],
     "server.secure_aggregation: threshold must be in [2, num_neighbours=4], got 5"),
    ([SECAGG.replace("threshold: 3", "threshold: 1")],
     "server.secure_aggregation: threshold must be in [2, num_neighbours=4], got 1"),
    ([SECAGG.replace("num_neighbours: 4}", "num_neighbours: 4, bits: 70}")],
     "server.secure_aggregation: bits must be in [8, 62], got 70"),
    ([SECAGG.replace("num_neighbours: 4}", "num_neighbours: 4, bits: 8}")],
     "bits=8 leaves 25 fixed-point levels per value for 10 clients"),
    ([SECAGG, "server.aggregator.name=median"],
     "server.secure_aggregation replaces the weighted mean with its own sum, so server.aggregator='median'"),
    ([SECAGG, "server.strategy.name=scaffold"], "would reach the server unmasked"),
    ([DP, "server.selection.name=oort"], "server.selection.name='oort' chooses clients by what they report"),
    ([DP, "server.mode=async", "server.buffer_size=5"], "server.privacy needs server.mode: sync"),
    (["train.dp={noise_multiplier: -1.0}"], "train.dp.noise_multiplier must be >= 0, got -1.0"),
    (["train.dp={delta: 1.5}"], "train.dp.delta must be in (0, 1), got 1.5"),
    (["train.dp={max_grad_norm: 0.0}"], "train.dp.max_grad_norm must be > 0, got 0.0"),
    (["train.dp={noise_multiplier: 1.0}", "server.strategy.name=fedprox"],
     "train.dp: objective terms (server.strategy='fedprox'"),
])
def test_bad_privacy_config_exits_2_naming_key_and_file(tmp_path, capsys, overrides, expected):
    path = tmp_path / "private.yaml"
    path.write_text("server:\n  rounds: 3\n")
    assert main(["validate", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert str(path) in err
    assert "Traceback" not in err


def test_poisson_selection_has_rate_k_over_n_and_keeps_everyone():
    selector = SELECTORS.build("poisson", SelectionConfig(name="poisson"))
    assert selector.keep_all
    state = selector.init(200)
    rng = np.random.default_rng(0)
    sizes, seen = [], np.zeros(200)
    for r in range(400):
        chosen, state = selector.select(SelectionRequest(r, np.arange(200), 20), state, rng)
        sizes.append(len(chosen))
        seen[chosen] += 1
    assert np.mean(sizes) == pytest.approx(20, rel=0.03)  # E = N q = 20
    assert np.var(sizes) == pytest.approx(200 * 0.1 * 0.9, rel=0.2)  # binomial, not fixed
    assert seen.min() > 20 and seen.max() < 65  # every client about 40 times
