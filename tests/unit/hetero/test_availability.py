"""Availability on the simulated clock: periodic and trace-driven."""

import math

import numpy as np
import pytest

from fedray.config import load_config
from fedray.hetero.availability import build_availability


def availability(num_clients, *overrides, seed=0):
    return build_availability(load_config(None, list(overrides)).clients.availability, num_clients, seed)


def test_always_online():
    a = availability(5)
    assert a.online(123.0).all() and math.isinf(a.next_change(0.0))


def test_periodic_clients_are_online_their_share_of_each_period():
    a = availability(400, "clients.availability.model=periodic", "clients.availability.period_s=100",
                     "clients.availability.online_fraction=0.25")
    times = np.arange(0, 100, 0.5)
    share = np.mean([a.online(t) for t in times], axis=0)
    assert share == pytest.approx(np.full(400, 0.25), abs=0.011)
    assert np.mean(a.online(37.0)) == pytest.approx(0.25, abs=0.06)  # phases spread the load
    np.testing.assert_array_equal(a.online(37.0), a.online(137.0))   # it repeats


def test_next_change_is_the_first_time_the_online_set_changes():
    a = availability(50, "clients.availability.model=periodic", "clients.availability.period_s=10",
                     "clients.availability.online_fraction=0.5")
    t = 3.3
    nxt = a.next_change(t)
    assert nxt > t
    np.testing.assert_array_equal(a.online(t), a.online((t + nxt) / 2))
    assert not np.array_equal(a.online(t), a.online(nxt + 1e-9))


def test_interval_trace_file(tmp_path):
    path = tmp_path / "online.csv"
    path.write_text("client_id,start_s,end_s\n0,0,10\n0,20,30\n1,5,25\n")
    a = availability(3, f"clients.availability.model={path}", "clients.availability.period_s=40")
    assert a.online(2.0).tolist() == [True, False, True]   # client 2 is not in the trace: always online
    assert a.online(12.0).tolist() == [False, True, True]
    assert a.online(42.0).tolist() == [True, False, True]  # period 40
    assert a.next_change(2.0) == 5.0 and a.next_change(31.0) == 40.0


def test_bad_interval_trace(tmp_path):
    path = tmp_path / "online.csv"
    path.write_text("client_id,start_s,end_s\n7,0,10\n")
    with pytest.raises(ValueError, match="0 <= client_id < 3"):
        availability(3, f"clients.availability.model={path}")
