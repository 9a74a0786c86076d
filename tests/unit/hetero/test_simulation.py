"""Simulated durations and admission: computed, reproducible, first K by finish time."""

import math

import numpy as np
import pytest

from fedray.config import load_config
from fedray.hetero.simulation import admit, build_simulation
from fedray.types import ClientResult


def simulation(*overrides, num_clients=6, payload=50_000):
    cfg = load_config(None, [f"clients.num_clients={num_clients}", "server.clients_per_round=2", *overrides])
    return build_simulation(cfg, np.arange(10, 10 + num_clients), payload)


def result(cid, ok=True, wall_s=0.3):
    if not ok:
        return ClientResult(cid, 1, error="boom", wall_s=wall_s)
    return ClientResult(cid, 1, num_examples=10 + cid, payloads={"delta": np.zeros(12_500, dtype=np.float32)},
                        train_loss=1.0, wall_s=wall_s)


def test_duration_is_download_plus_scaled_compute_plus_upload():
    sim = simulation("clients.profiles.source=flash", "clients.profiles.vary_bandwidth=false",
                     "train.local_epochs=3", "clients.profiles.seconds_per_example=0.02")
    d = sim.devices
    t = sim.timing(result(4), server_round=1, launch=0, bytes_down=50_000)
    assert t.compute_s == pytest.approx(3 * 14 * 0.02 * d.speed_factor[4])
    assert t.download_s == pytest.approx(50_000 * 8 / 1000 / d.down_kbps[4])
    assert t.upload_s == pytest.approx(50_000 * 8 / 1000 / d.up_kbps[4])
    assert t.total_s == pytest.approx(t.download_s + t.compute_s + t.upload_s)
    assert sim.expected_durations()[4] == pytest.approx(t.total_s)


def test_bandwidth_draws_vary_per_round_but_are_reproducible():
    sim = simulation("clients.profiles.source=flash")
    first = [sim.timing(result(2), server_round=r, launch=0, bytes_down=50_000).download_s for r in range(1, 6)]
    again = [simulation("clients.profiles.source=flash").timing(result(2), r, 0, 50_000).download_s for r in range(1, 6)]
    assert first == again and len(set(first)) == 5 and min(first) > 0


def test_measured_compute_scales_wall_time():
    sim = simulation("clients.profiles.source=flash", "clients.profiles.compute=measured")
    assert sim.timing(result(1, wall_s=0.5), 1, 0, 50_000).compute_s == pytest.approx(0.5 * sim.devices.speed_factor[1])


def test_a_failed_client_only_downloaded():
    sim = simulation("clients.profiles.source=flash")
    t = sim.timing(result(3, ok=False), 1, 0, 50_000)
    assert t.compute_s == t.upload_s == 0.0 and t.download_s > 0


def test_the_download_takes_what_the_client_was_sent():
    sim = simulation("clients.profiles.source=flash", "clients.profiles.vary_bandwidth=false")
    small, large = (sim.timing(result(2), 1, 0, b).download_s for b in (1_000, 100_000))
    assert large == pytest.approx(100 * small) and small == pytest.approx(1_000 * 8e-3 / sim.devices.down_kbps[2])


def test_without_profiles_time_is_the_reference_device_with_free_transfers():
    t = simulation().timing(result(0), 1, 0, 50_000)
    assert t.transfer_s == 0.0 and t.compute_s == pytest.approx(10 * 0.01)


def test_admit_keeps_the_first_k_successes_and_the_round_ends_with_the_kth():
    finish = {0: 5.0, 1: 1.0, 2: 3.0, 3: 2.0, 4: 2.0}
    a = admit(finish, ok=[0, 1, 2, 4], k=2)  # 3 failed
    assert a.kept == [1, 4] and a.late == [2, 0] and a.round_s == 2.0


def test_admit_with_a_deadline():
    finish = {0: 5.0, 1: 1.0, 2: 3.0}
    a = admit(finish, ok=[0, 1, 2], k=3, deadline_s=4.0)
    assert a.kept == [1, 2] and a.late == [0] and a.round_s == 4.0
    everyone_early = admit(finish, ok=[0, 1, 2], k=3, deadline_s=10.0)
    assert everyone_early.late == [] and everyone_early.round_s == 5.0


def test_admit_when_a_client_never_reports():
    a = admit({0: 2.0, 1: math.inf}, ok=[0], k=2)
    assert a.kept == [0] and a.round_s == 2.0
