"""Codecs on a real local Ray: encoded bytes counted exactly both ways, the broadcast
decoded once per actor, error-feedback state surviving a restart from the checkpoint
bit-identically, and `rate: auto` keeping uploads within the round."""

import math

import numpy as np
import pyarrow.parquet as pq
import ray

from fedray.launcher import prepare, run, run_key
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import small_config
from tests.helpers import kept_states, private_arrays_in_checkpoint, untimed

CODEC_TIMES = {"encode_s", "decode_s", "downlink_encode_s", "downlink_decode_s"}


def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()


def run_quiet(cfg, hook=None):
    return run(prepare(cfg), console=hook or (lambda line: None))


TOP_K_BOTH_WAYS = ["server.rounds=4", "clients.codec.name=top_k", "clients.codec.args={fraction: 0.05}",
                   "server.codec.name=int8", "data.partition=dirichlet"]


def test_error_feedback_survives_a_restart_from_the_checkpoint_and_bytes_are_exact(ray_cluster, tmp_path):
    N = prepare(small_config(tmp_path / "ref", *TOP_K_BOTH_WAYS)).num_params  # noqa: N806 (the model's size)
    reference = run_quiet(small_config(tmp_path / "ref", *TOP_K_BOTH_WAYS))
    lines = []

    def kill_server_after_round_2(line):
        lines.append(line)
        if line.startswith("round 2/4"):
            ray.kill(ray.get_actor(f"fedray/{run_key(tmp_path / 'b' / 'test')}/0/server"))

    restarted = run_quiet(small_config(tmp_path / "b", *TOP_K_BOTH_WAYS), hook=kill_server_after_round_2)
    assert restarted["status"] == "completed"
    assert any("resuming after round 2" in line for line in lines)

    rows = metrics(restarted["run_dir"])
    strip = [{k: v for k, v in r.items() if k not in CODEC_TIMES} for r in rows]
    assert untimed(strip) == untimed([{k: v for k, v in r.items() if k not in CODEC_TIMES}
                                      for r in metrics(reference["run_dir"])])
    ours = load_checkpoint(latest_checkpoint(tmp_path / "b" / "test" / "checkpoints"))
    theirs = load_checkpoint(latest_checkpoint(tmp_path / "ref" / "test" / "checkpoints"))
    np.testing.assert_array_equal(ours.params, theirs.params)
    mine = kept_states(tmp_path / "b" / "test", small_config(tmp_path / "b", *TOP_K_BOTH_WAYS))
    other = kept_states(tmp_path / "ref" / "test", small_config(tmp_path / "ref", *TOP_K_BOTH_WAYS))
    assert sorted(mine) == sorted(other) != [] and ours.client_refs == theirs.client_refs
    for cid, kept in mine.items():  # every client's error-feedback residual, from its store
        residual = kept.transforms[0]
        assert residual.shape == (N,) and np.abs(residual).sum() > 0
        np.testing.assert_array_equal(residual, other[cid].transforms[0])
    assert private_arrays_in_checkpoint(tmp_path / "b" / "test", mine) == []

    k = math.ceil(0.05 * N)
    for r in rows:  # top-k: int32 index + float32 value each, and the length
        assert r["bytes_up"] == r["clients_succeeded"] * (8 * k + 4)
        assert r["bytes_down"] == r["clients_selected"] * (N + 4 * math.ceil(N / 256))  # int8 + scales
        assert 1 <= r["downlink_decodes"] <= 2  # once per pool actor, not once per client
        assert CODEC_TIMES <= set(r)
    clients = pq.read_table(tmp_path / "b" / "test" / "clients.parquet").to_pydict()
    seen = [b for b, n in zip(clients["last_bytes_up"], clients["times_selected"]) if n]
    assert set(seen) == {8 * k + 4}


def test_rate_auto_fits_uploads_into_the_target_time(ray_cluster, tmp_path):
    """Each client's budget is (target - its download and compute) x its uplink, so a
    client finishes by the target, or, if even its lowest rate cannot, sends that."""
    target = 0.3
    cfg = small_config(tmp_path, "server.rounds=2", "server.clients_per_round=10", "model.hidden=[256]",
                       "clients.profiles.source=flash", "clients.profiles.vary_bandwidth=false",
                       "clients.profiles.seconds_per_example=0.0005", "clients.codec.name=gain",
                       f"clients.codec.args={{rate: auto, target_s: {target}}}")
    summary = run_quiet(cfg)
    c = pq.read_table(tmp_path / "test" / "clients.parquet").to_pydict()
    duration, sent = np.array(c["last_duration_s"]), np.array(c["last_bytes_up"])
    late = duration > target * (1 + 1e-9)
    assert late.any() and (~late).any()
    assert np.all(sent[late] < 0.1 * sent.max())  # past the target only at the lowest rate
    assert np.any(np.abs(duration - target) < 0.01)  # others filled their budget up to it
    assert metrics(summary["run_dir"])[-1]["sim_round_s"] == duration.max()
