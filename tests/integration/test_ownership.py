"""Ownership and time on a real local Ray: owners' watermarks in the federated model (digits
and a LoRA adapter, verified from the run directory and from `fedray export`), and a
continual run whose methods' memory survives a killed server bit for bit."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from fedray.cli.main import main
from fedray.cli.watermark import load_model
from fedray.config import load_config
from fedray.launcher import prepare, run, run_key
from fedray.lifecycle.watermark import fine_tune, key_path, prune_by_magnitude, quantize_int8, read_key, verify
from fedray.models.tasks import Classification
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import REPO, small_config
from tests.helpers import kept_states, private_arrays_in_checkpoint, untimed

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5


def metrics(run_dir):
    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()


def run_quiet(cfg, hook=None, warm=None):
    summary = run(prepare(cfg), console=hook or (lambda line: None), warm=warm)
    assert summary["status"] == "completed"
    return summary["run_dir"]


# ---- watermarks ----------------------------------------------------------------------

def watermark_config(tmp_path, *overrides):
    """configs/watermark.yaml, smaller: 4 clients, every one in every round, 5 rounds."""
    return load_config(f"{REPO}/configs/watermark.yaml", [
        f"output_dir={tmp_path / 'runs'}", f"server.watermark.keys={tmp_path / 'keys'}", "clients.num_clients=4",
        "server.clients_per_round=4", "server.rounds=5", *overrides])


def test_owners_watermarks_are_embedded_survive_attacks_and_cost_no_accuracy(ray_cluster, tmp_path, capsys,
                                                                          warm_actors):
    marked = run_quiet(watermark_config(tmp_path), warm=warm_actors)
    plain = run_quiet(watermark_config(tmp_path, "name=plain", "server.watermark.name=null"), warm=warm_actors)
    keys = [key_path(tmp_path / "keys", c) for c in (0, 1)]

    # each owner proves its share, exit status 0 (keys come from fresh entropy every run,
    # so a bit or two of 64 may sit on the margin: the bound is the 5%)
    assert main(["watermark", "verify", marked, "--key", str(keys[0]), "--key", str(keys[1]), "--json"]) == 0
    assert all(r["ber"] <= 0.05 and r["detected"] for r in json.loads(capsys.readouterr().out))
    # the same federation trained without the watermark matches about half the bits
    assert main(["watermark", "verify", plain, "--key", str(keys[0]), "--json"]) == 1
    (unmarked,) = json.loads(capsys.readouterr().out)
    assert 0.3 <= unmarked["ber"] <= 0.7 and unmarked["p_value"] > 1e-3
    # clean accuracy costs at most a point
    assert metrics(marked)[-1]["eval_accuracy"] >= metrics(plain)[-1]["eval_accuracy"] - 0.01
    # the secrets are nowhere in the run directory
    secrets = [read_key(k)["secret"] for k in keys]
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert not any(s.encode() in path.read_bytes() for s in secrets), path

    # what a thief may do to the stolen model
    prepared = prepare(watermark_config(tmp_path))
    fresh = Classification().prepare(prepared.dataset.test, torch.device("cpu"))  # data it never trained on
    for attack in (lambda m: prune_by_magnitude(m.parameters(), 0.3), lambda m: quantize_int8(m.parameters()),
                   lambda m: fine_tune(m, Classification(), fresh, epochs=5, lr=0.05)):
        model, _ = load_model(marked)
        attack(model)
        assert all(verify(model, read_key(k))["ber"] <= 0.05 for k in keys)


def test_watermark_in_a_lora_adapter_is_verified_from_the_export(ray_cluster, tmp_path, capsys):
    cfg = small_config(
        tmp_path / "runs", "data.dataset=shakespeare", "data.partition=natural", "data.max_owners=2", "data.seq_len=32",
        "data.test_fraction=0.1", "model.name=hf_causal_lm",
        "model.config={model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}",
        "model.peft={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}", "clients.num_clients=2",
        "server.clients_per_round=2", "clients.pool_size=1", "train.local_steps=5", "train.batch_size=8",
        "train.optimizer=adamw", "train.lr=0.01", "server.rounds=2", "server.watermark.name=feature",
        f"server.watermark.keys={tmp_path / 'keys'}", "server.watermark.args={num_bits: 32, params: lora_}")
    run_dir = run_quiet(cfg)
    key = str(key_path(tmp_path / "keys", 0))
    assert main(["export", run_dir, "--out", str(tmp_path / "export")]) == 0
    capsys.readouterr()
    for where in (run_dir, tmp_path / "export", tmp_path / "export" / "adapter"):
        assert main(["watermark", "verify", str(where), "--key", key, "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        assert result["ber"] == 0 and result["detected"]


# ---- continual -----------------------------------------------------------------------

def continual_config(where):
    """configs/continual.yaml, smaller, with every method at once: replay and EWC on the
    clients, the task anchor on the server."""
    return load_config(f"{REPO}/configs/continual.yaml", [
        f"output_dir={where}", "name=test", "server.rounds=6", "clients.num_clients=6", "server.clients_per_round=3",
        "data.schedule.rounds_per_task=3", "train.local_epochs=1", "server.eval_every=2",
        "clients.objective=[{name: replay, args: {buffer_size: 20}}, {name: ewc, args: {fisher_batches: 2}}]",
        "server.transforms=[{name: task_anchor, args: {strength: 0.1}}]"])


def test_continual_memory_survives_a_killed_server_bit_identically(ray_cluster, tmp_path):
    """The server actor dies after round 4 and restarts from its checkpoint: every client's
    replay buffer and EWC memory, the anchor and the metrics equal an uninterrupted run's."""
    reference = run_quiet(continual_config(tmp_path / "ref"))
    name = f"fedray/{run_key(tmp_path / 'b' / 'test')}/0/server"
    lines = []

    def kill_after_round_4(line):
        lines.append(line)
        if line.startswith("round 4/6"):
            ray.kill(ray.get_actor(name))

    restarted = run_quiet(continual_config(tmp_path / "b"), hook=kill_after_round_4)
    assert any("resuming after round 4" in line for line in lines)
    ours, theirs = (load_checkpoint(latest_checkpoint(f"{d}/checkpoints")) for d in (restarted, reference))
    np.testing.assert_array_equal(ours.params, theirs.params)
    mine, reference_kept = (kept_states(d, continual_config(where)) for d, where in
                            ((restarted, tmp_path / "b"), (reference, tmp_path / "ref")))
    assert sorted(mine) == sorted(reference_kept) != [] and ours.client_refs == theirs.client_refs
    # no replayed row and no Fisher weight is in the server's checkpoint (EWC's anchor is
    # the global model at a task's end: the server's task anchor holds it too)
    private = {c: (kept.terms[0], kept.terms[1].fisher) for c, kept in mine.items()}
    assert private_arrays_in_checkpoint(restarted, private) == []
    for cid, kept in mine.items():
        buffer, memory = kept.terms
        other_buffer, other_memory = reference_kept[cid].terms
        assert buffer.tasks == other_buffer.tasks and buffer.num_rows > 0
        for rows, other in zip(buffer.rows, other_buffer.rows):
            for a, b in zip(rows, other):
                np.testing.assert_array_equal(a, b)
        for a, b in zip(memory, other_memory):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours.transform_state[0].anchor, theirs.transform_state[0].anchor)
    rows = metrics(restarted)
    assert untimed(rows) == untimed(metrics(reference))

    # per-task columns in evaluated rounds (NaN in the others): the federation's task,
    # every task's accuracy, the summaries
    assert np.array_equal([r["task"] for r in rows], [np.nan, 0, np.nan, 1, np.nan, 1], equal_nan=True)
    assert np.isnan(rows[1]["forgetting"]) and np.isfinite(rows[-1]["forgetting"])
    best = max(rows[1]["task_acc_0"], rows[3]["task_acc_0"])
    assert rows[-1]["forgetting"] == pytest.approx(best - rows[-1]["task_acc_0"])
    assert rows[-1]["avg_acc"] == pytest.approx((rows[-1]["task_acc_0"] + rows[-1]["task_acc_1"]) / 2)
    assert main(["report", restarted, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "task_accuracy_test.png").is_file()
