"""Instruction tuning end to end on a local Ray: JSONL conversations per owner packed into
rows, LoRA on a tiny byte-level llama, generation-scored evaluation, the communication
budget, an export that loads from a copied folder with transformers and peft alone, and
a run stopped after round 1 that resumes to the same result."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedray.cli.main import main
from fedray.config import load_config
from fedray.launcher import prepare, run
from fedray.server.budget import MB, estimated_round_bytes
from fedray.server.checkpoint import list_checkpoints, load_checkpoint
from fedray.server.export import global_model
from tests.conftest import REPO
from tests.helpers import assert_resumes_exactly

QUIET = {"console": lambda line: None}


def conversations(root: Path) -> Path:
    """Two owners of alpaca and chat records (questions with one-word answers)."""
    root.mkdir(parents=True)
    alice = [{"instruction": f"What is {i} plus one?", "output": str(i + 1)} for i in range(12)]
    bob = [{"messages": [{"role": "user", "content": f"Echo {w}"}, {"role": "assistant", "content": w}]}
           for w in ("red", "blue", "green", "cyan", "pink", "gold", "grey", "teal", "navy", "lime")]
    for name, records in (("alice", alice), ("bob", bob)):
        (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return root


def config(tmp_path, *overrides):
    return load_config(f"{REPO}/configs/instruct_tiny.yaml", [
        f"output_dir={tmp_path}", "data.dataset=instructions", f"data.path={conversations(tmp_path / 'data')}",
        "data.seq_len=64", *overrides])


PACKED = ("data.seq_len=128", "data.instruct.packing=true")


def test_packed_instructions_train_evaluate_by_generation_export_and_resume_exactly(ray_cluster, tmp_path):
    prepared = prepare(config(tmp_path, *PACKED))
    lines = []
    summary = run(prepared, console=lines.append)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert any(line.startswith("data: 0 of 22 responses cut to fit data.seq_len=128 (0 tokens); 0 conversations "
                               "dropped") for line in lines)  # the truncation count, said once at start
    rows = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()
    for row in rows:
        assert 0 <= row["acc/alice"] <= 1 and 0 <= row["acc/bob"] <= 1
        assert row["eval_accuracy"] == pytest.approx((row["acc/alice"] * 4 + row["acc/bob"] * 4) / 8)
        assert np.isfinite(row["eval_loss"])

    out = tmp_path / "export"
    assert main(["export", summary["run_dir"], "--out", str(out), "--merged"]) == 0
    copied = tmp_path / "elsewhere" / "export"
    shutil.copytree(out, copied)
    shutil.rmtree(out)  # nothing may point back at the original
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(copied / json.loads(
        (copied / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"])
    exported = PeftModel.from_pretrained(base, copied / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(copied / "adapter")
    assert tokenizer("hé", add_special_tokens=False)["input_ids"] == list("hé".encode())
    state = load_checkpoint(list_checkpoints(Path(summary["run_dir"]) / "checkpoints")[-1])
    ours = global_model(prepared.cfg, state, prepared.dataset.info)
    ids = torch.tensor([list(b"### User:\nEcho red\n\n### Assistant:\n")])
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, ours(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert main(["generate", str(copied), "--prompt", "Echo red", "--max-new-tokens", "4"]) == 0

    # trained on packed rows, stopped by Ctrl-C after round 1 and resumed: the same
    # metrics (generation scores included) and adapters, byte for byte
    assert_resumes_exactly(lambda folder: config(folder, *PACKED), tmp_path / "again", reference=summary)


def test_the_budget_stops_the_run_after_the_last_round_that_fits(ray_cluster, tmp_path, capsys):
    probe = prepare(config(tmp_path / "probe"))
    one_round = estimated_round_bytes(2, probe.num_params) / MB
    cfg = config(tmp_path, "server.rounds=4", "server.checkpoint_every=3", f"server.budget_mb={2.5 * one_round}")
    lines = []
    summary = run(prepare(cfg), console=lines.append)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert any("fits 2 round(s)" in line and "stops after round 2 of 4" in line for line in lines)
    rows = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()
    used = sum(r["bytes_up"] + r["bytes_down"] for r in rows)
    assert summary["communication"]["used_mb"] == pytest.approx(used / MB)
    assert summary["communication"]["stopped_by_budget"] and used <= 2.5 * one_round * MB
    checkpoints = list_checkpoints(Path(summary["run_dir"]) / "checkpoints")
    assert load_checkpoint(checkpoints[-1]).server_round == 2  # saved at the stop, though not a checkpoint round

    with pytest.raises(Exception, match=r"server.budget_mb=0.0001 does not fit one round"):
        prepare(config(tmp_path / "small", "server.budget_mb=0.0001"))



def test_clients_score_generated_answers_to_their_own_held_out_prompts(ray_cluster, tmp_path):
    """Federated evaluation of an instruction run: each owner holds out a quarter of its
    conversations, answers them with the broadcast model and returns its scores alone."""
    cfg = config(tmp_path, "server.rounds=1", "data.client_test_fraction=0.25", "server.evaluation.where=both")
    summary = run(prepare(cfg), console=lambda line: None)
    assert summary["status"] == "completed"
    rows = pq.read_table(f"{summary['run_dir']}/evaluation.parquet").to_pylist()
    # alice has 12 conversations and bob 10; the split is per client, seeded, about a quarter
    assert sorted(r["client_id"] for r in rows) == [0, 1] and {r["model"] for r in rows} == {"global"}
    assert all(2 <= r["examples"] <= 4 and 0 <= r["accuracy"] <= 1 and np.isfinite(r["loss"]) for r in rows)
    metrics = pq.read_table(f"{summary['run_dir']}/metrics.parquet").to_pylist()[-1]
    assert metrics["fed_clients"] == 2 and 0 <= metrics["acc/alice"] <= 1  # the server's split, scored per owner
    assert metrics["fed_global_accuracy"] == pytest.approx(np.average(
        [r["accuracy"] for r in rows], weights=[r["examples"] for r in rows]))
