"""QLoRA end to end on a real local Ray: a 4-bit tiny llama base, float32 adapters travel,
peak memory per client in clients.parquet, and the merged export dequantised."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedray.cli.main import main
from fedray.models.build import build_model
from fedray.models.flat import param_spec
from fedray.server.export import global_model
from tests.integration.test_lora import CLIENTS, lora_config, run_lora

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
QLORA = ("model.quantization.bits=4", "model.quantization.type=nf4", "model.quantization.double_quant=true",
         "server.rounds=2")


def test_a_4bit_base_sends_the_same_adapters_and_records_peaks(ray_cluster, tmp_path):
    cfg = lora_config(tmp_path, *QLORA)
    prepared, run_dir, rows, state = run_lora(cfg)
    float_spec = param_spec(build_model(lora_config(tmp_path).model, prepared.dataset.info, 0))
    # adapters-only traffic, byte for byte what a float base sends
    assert [r["bytes_up"] for r in rows] == [CLIENTS * float_spec.num_bytes] * 2
    assert state.params.shape == (float_spec.num_params,)
    assert all(r["clients_succeeded"] == CLIENTS for r in rows)
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]

    clients = pq.read_table(Path(run_dir) / "clients.parquet").to_pydict()
    peaks = np.asarray(clients["peak_memory_mb"])
    assert np.isfinite(peaks).all() and (peaks > 0).all()  # every client trained and reported
    assert len(set(clients["pid"])) == 1  # one pool actor hosts them all: its peak, as each trained

    # --merged: a float model holding the dequantised base computes what the server's 4-bit one does
    out = tmp_path / "export"
    assert main(["export", run_dir, "--out", str(out), "--merged"]) == 0
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "merged", local_files_only=True).eval()
    assert not any("4bit" in type(m).__name__ for m in merged.modules())
    ours = global_model(prepared.cfg, state, prepared.dataset.info)
    ids = torch.arange(1, 33).reshape(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, ours(input_ids=ids).logits, rtol=1e-3, atol=1e-3)
