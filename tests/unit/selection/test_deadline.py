"""Deadline: over-commit by ceil((1+o)K), aggregate exactly the first K to finish."""

import numpy as np
import pytest

from fedray.config import load_config
from fedray.hetero.devices import Devices
from fedray.hetero.simulation import Simulation, admit
from fedray.hetero.availability import Availability
from fedray.selection import SELECTORS, SelectionRequest
from fedray.types import ClientResult


def deadline(overcommit):
    cfg = load_config(None, [f"server.selection.deadline.overcommit={overcommit}"])
    return SELECTORS.build("deadline", cfg.server.selection)


@pytest.mark.parametrize("overcommit, k, expected", [(0.3, 10, 13), (0.5, 4, 6), (0.0, 7, 7), (0.25, 3, 4)])
def test_over_commits_by_the_configured_share(overcommit, k, expected):
    chosen, _ = deadline(overcommit).select(SelectionRequest(1, np.arange(50), k), (), np.random.default_rng(0))
    assert len(chosen) == len(set(chosen)) == expected


def simulation_with_speeds(speed_factor, cfg):
    """Hand-built devices: given speed factors, fixed 1000 kbit/s both ways."""
    n = len(speed_factor)
    ones = np.ones(n)
    devices = Devices(np.asarray(speed_factor, dtype=float), 1000 * ones, 0 * ones, 1000 * ones, 0 * ones,
                      np.full(n, "default", dtype=object), np.full(n, "", dtype=object))
    always = Availability(lambda t: np.ones(n, dtype=bool), lambda t: np.inf)
    return Simulation(cfg, devices, always, np.full(n, 40), payload_bytes=125_000)


def test_the_first_k_to_finish_are_aggregated_and_the_rest_dropped():
    cfg = load_config(None, ["clients.num_clients=20", "train.local_epochs=1",
                             "clients.profiles.seconds_per_example=0.05"])
    speed = np.random.default_rng(0).permutation(np.linspace(0.5, 10.0, 20))
    sim = simulation_with_speeds(speed, cfg)
    chosen, _ = deadline(0.3).select(SelectionRequest(1, np.arange(20), 10), (), np.random.default_rng(1))
    assert len(chosen) == 13
    update = np.zeros(1000, dtype=np.float32)
    finish = {}
    for cid in chosen:
        result = ClientResult(cid, 1, num_examples=40, payloads={"delta": update}, train_loss=1.0)
        finish[cid] = sim.timing(result, 1, 0, 125_000).total_s
    # 40 examples x 0.05 s x speed, plus 125 kB down and 4 kB up at 1000 kbit/s
    assert finish[chosen[0]] == pytest.approx(2.0 * speed[chosen[0]] + 1.0 + 0.032)
    admission = admit(finish, chosen, k=10)
    by_finish = sorted(chosen, key=lambda c: finish[c])
    assert admission.kept == sorted(by_finish[:10])
    assert sorted(admission.late) == sorted(by_finish[10:])
    assert admission.round_s == finish[by_finish[9]]  # the server moves on at the 10th finisher
