"""Knowledge transfer on text end to end: a ZeRO-3 byte-level llama on 2 ranks
teaching LoRA clients on Shakespeare roles (configs/fedfm_text.yaml, 2 rounds)."""

import numpy as np
import pyarrow.parquet as pq

from fedray.config import load_config
from fedray.foundation.transfer import Distiller
from fedray.launcher import prepare, run
from tests.conftest import REPO

QUIET = {"console": lambda line: None}


def text_config(tmp_path, *overrides):
    return load_config(f"{REPO}/configs/fedfm_text.yaml", [f"output_dir={tmp_path}", *overrides])


def test_the_foundation_model_teaching_lowers_the_clients_held_out_loss(ray_cluster, tmp_path, warm_actors):
    """Same seed, same data split (the public rows are held out in both): only the
    knowledge transfer differs."""
    with_kd = run(prepare(text_config(tmp_path / "on")), warm=warm_actors, **QUIET)
    without = run(prepare(text_config(tmp_path / "off", "server.distill.server_to_client=false",
                                      "server.distill.client_to_server=false",
                                      # untaught: its foundation model is never read, so it is not warmed up
                                      "server.distill.pretrain_steps=0")), warm=warm_actors, **QUIET)
    assert with_kd["status"] == without["status"] == "completed"
    # measured on the suite's pinned AVX2 path (tests/conftest.py): 2.895 against 2.961
    # nats per byte; the same run took 2.944 with a teacher warmed up half as long
    assert with_kd["final_metrics"]["loss"] < without["final_metrics"]["loss"] - 0.04
    rows = pq.read_table(f"{with_kd['run_dir']}/metrics.parquet").to_pylist()
    adapter = 4 * 8 * ((32 + 32) + (32 + 16) + (64 + 32) + (32 + 257))  # r=8 on q, v, down, lm_head
    top10 = 256 * 32 * 10 * (4 + 8)  # values and indices at every position of 256 public rows
    assert rows[0]["bytes_down"] == rows[0]["bytes_up"] == 4 * (adapter + top10)
    assert all(np.isfinite(r["kd_loss"]) for r in rows) and rows[1]["kd_loss"] < rows[0]["kd_loss"]


def test_a_generated_public_set_is_cached_reused_on_resume_and_deterministic(ray_cluster, tmp_path):
    generate = ["server.distill.public.source=generate", "server.distill.pretrain_steps=0", "server.rounds=1"]
    first = run(prepare(text_config(tmp_path / "a", *generate)), **QUIET)
    cached = tmp_path / "a" / "fedfm_text" / "public" / "round_000001.npy"
    ids = np.load(cached)
    assert ids.shape == (16, 32) and (ids[:, 0] == 256).all()  # each starts at an end-of-document token
    starts = {bytes(r[1:7].astype(np.uint8)) for r in ids}
    assert starts == {b"ROMEO.", b"JULIET"}  # the two prompts, alternating
    stamp = cached.stat().st_mtime_ns

    resumed = run(prepare(text_config(tmp_path / "a", *generate, "server.rounds=2")),
                  resume=first["run_dir"], **QUIET)
    assert resumed["status"] == "completed" and resumed["rounds_completed"] == 2
    assert cached.stat().st_mtime_ns == stamp  # read back, not sampled again
    rows = pq.read_table(f"{resumed['run_dir']}/metrics.parquet").to_pylist()
    assert [r["round"] for r in rows] == [1, 2] and all(np.isfinite(r["kd_loss"]) for r in rows)

    # the same seed samples the same set again: a fresh foundation model, no cache
    prepared = prepare(text_config(tmp_path / "b", *generate))
    again = Distiller.for_run(prepared.cfg, prepared.dataset, "fedfm-text-again")
    try:
        again.begin_round(1)
        np.testing.assert_array_equal(again.public_inputs, ids)
    finally:
        again.shutdown()
