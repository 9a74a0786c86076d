"""Simulated devices: the bundled trace, user traces in the same schema, distributions."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedray.config import load_config
from fedray.hetero.devices import BUNDLED, build_devices, read_trace


def profiles_cfg(*overrides):
    return load_config(None, list(overrides)).clients.profiles


def test_bundled_flash_trace_ships_with_its_licence_and_units():
    assert (BUNDLED / "LICENSE.md").read_text().startswith("BSD 2-Clause License")
    assert "kbit/s" in (BUNDLED / "README.md").read_text()
    table = read_trace(BUNDLED / "flash.csv")
    assert table.num_rows == 307
    scores = table["compute_score"].to_numpy()
    assert scores.min() == 212 and scores.max() == 76206
    assert set(table["client_type"].to_pylist()) == {"low", "mid", "high"}


def test_flash_devices_are_heterogeneous_and_reproducible():
    devices = build_devices(profiles_cfg("clients.profiles.source=flash"), 200, run_seed=0)
    again = build_devices(profiles_cfg("clients.profiles.source=flash"), 200, run_seed=0)
    other = build_devices(profiles_cfg("clients.profiles.source=flash", "clients.profiles.seed=9"), 200, run_seed=0)
    np.testing.assert_array_equal(devices.speed_factor, again.speed_factor)
    assert not np.array_equal(devices.speed_factor, other.speed_factor)
    assert devices.speed_factor.max() / devices.speed_factor.min() > 50   # 2013 phones vs 2019 flagships
    assert 0.5 < np.median(devices.speed_factor) < 2.0                    # the median phone is the reference
    assert (devices.down_kbps > 0).all() and (devices.up_sigma_kbps >= 0).all()


def test_no_source_means_homogeneous_reference_devices():
    devices = build_devices(profiles_cfg(), 4, run_seed=0)
    assert devices.speed_factor.tolist() == [1.0] * 4 and np.isinf(devices.down_kbps).all()


def test_lognormal_distribution_has_median_one():
    devices = build_devices(profiles_cfg("clients.profiles.source=lognormal",
                                         "clients.profiles.speed_sigma=0.5"), 4000, run_seed=1)
    assert np.median(devices.speed_factor) == pytest.approx(1.0, rel=0.05)
    assert np.std(np.log(devices.speed_factor)) == pytest.approx(0.5, rel=0.05)
    assert set(devices.client_type) == {"low", "mid", "high"}


def test_user_trace_pins_rows_to_clients(tmp_path):
    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({
        "client_id": [2, 0, 1], "compute_score": [100.0, 400.0, 200.0],
        "down_kbps": [1000.0, 2000.0, 3000.0], "up_kbps": [10.0, 20.0, 30.0],
        "client_type": ["x", "y", "z"],
    }), path)
    devices = build_devices(profiles_cfg(f"clients.profiles.source={path}"), 3, run_seed=0)
    # median score 200: client 0 (400) is twice as fast, client 2 (100) twice as slow
    assert devices.speed_factor.tolist() == [0.5, 1.0, 2.0]
    assert devices.down_kbps.tolist() == [2000.0, 3000.0, 1000.0]
    assert devices.client_type.tolist() == ["y", "z", "x"]
    assert devices.up_sigma_kbps.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("content, message", [
    ("compute_score,down_kbps\n1,2\n", r"lacks column\(s\) \['up_kbps'\]"),
    ("compute_score,down_kbps,up_kbps\n1,-2,3\n", "column down_kbps must be finite and > 0"),
    ("compute_score,down_kbps,up_kbps\n", "has no rows"),
    ("client_id,compute_score,down_kbps,up_kbps\n0,1,2,3\n0,1,2,3\n", r"list each of the 3 clients once; missing \[1, 2\]"),
])
def test_bad_traces_are_reported_with_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        build_devices(profiles_cfg(f"clients.profiles.source={path}"), 3, run_seed=0)
