"""`fedray watermark verify` on a run directory written by hand (no Ray), and bad input to
the watermark and the data schedule: exit status 2 with the key and the reason, no traceback."""

import json

import numpy as np
import pytest
import torch

from fedray.cli.main import main
from fedray.config import load_config, to_yaml
from fedray.data.federated import build_federated_dataset
from fedray.lifecycle.watermark import SCHEMES, key_path
from fedray.lifecycle.watermark.keys import new_key, write_key
from fedray.models.build import build_model
from fedray.models.flat import get_flat, param_spec
from fedray.server.checkpoint import save_checkpoint
from fedray.server.state import ServerState
from fedray.strategy.terms import LocalRound
from fedray.types import Context

ARGS = {"num_bits": 32, "params": r"^2\.", "margin": 2.0, "weight": 1.0}


def marked_run(tmp_path):
    """A run directory whose newest checkpoint holds a model that client 0 watermarked."""
    cfg = load_config(None, [f"output_dir={tmp_path}/runs", "name=wm", "server.watermark.name=feature",
                             f"server.watermark.keys={tmp_path}/keys", f"server.watermark.args={json.dumps(ARGS)}"])
    info = build_federated_dataset(cfg.data, 2, 0).info
    model = build_model(cfg.model, info, cfg.seed)
    spec = param_spec(model)
    scheme = SCHEMES.build("feature", **ARGS)
    keys = [write_key(key_path(tmp_path / "keys", c), new_key("feature", ARGS, c, scheme.layout(spec, info)))
            for c in (0, 1)]
    local = LocalRound(model, spec, get_flat(model, spec), {}, Context(1, 0, 0), cfg.train, None)
    hinge = scheme.regularizer(json.loads(keys[0].read_text()), local)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        hinge(model, None).backward()
        optimizer.step()
    run_dir = tmp_path / "runs" / "wm"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    state = ServerState(server_round=3, params=get_flat(model, spec), transform_state=(), selector_state=(),
                        rng_state={})
    save_checkpoint(run_dir / "checkpoints", state, keep=1)
    return run_dir, keys


def test_verify_a_run_directory(tmp_path, capsys):
    run_dir, (owner, other) = marked_run(tmp_path)
    assert main(["watermark", "verify", str(run_dir), "--key", str(owner)]) == 0
    out = capsys.readouterr().out
    assert "global model after round 3" in out
    assert "client 0 (feature" in out and "0/32 bit errors (BER 0.000)" in out and "watermark detected" in out
    # client 1's key was never embedded: about half the bits, exit status 1
    assert main(["watermark", "verify", str(run_dir), "--key", str(owner), "--key", str(other), "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r["detected"] for r in results] == [True, False]
    assert results[0]["ber"] == 0 and 0.2 < results[1]["ber"] < 0.8 and results[1]["p_value"] > 1e-3


@pytest.mark.parametrize("target, key, message", [
    ("run", "missing.json", "key file {tmp}/missing.json does not exist"),
    ("nowhere", "key", "is neither a fedray run directory"),
])
def test_verify_bad_input_exits_2(tmp_path, capsys, target, key, message):
    run_dir, keys = marked_run(tmp_path)
    where = str(run_dir) if target == "run" else str(tmp_path / "nowhere")
    key_file = str(keys[0]) if key == "key" else str(tmp_path / key)
    assert main(["watermark", "verify", where, "--key", key_file]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err


@pytest.mark.parametrize("overrides, message", [
    (["server.watermark.args={num_bits: 651, params: '^2\\.'}"],
     "server.watermark.args: num_bits=651 is larger than the 650 parameters selected by params='^2\\.'"),
    (["server.watermark.keys={tmp}/runs/keys"], "server.watermark.keys={tmp}/runs/keys lies inside output_dir"),
    (["server.watermark.keys=null"], "server.watermark.keys must name a folder"),
    (["server.watermark.keys=s3://bucket/keys"], "server.watermark.keys must be a local folder"),
    (["server.watermark.keys={tmp}/exp.yaml/keys"], "server.watermark.keys: {tmp}/exp.yaml is a file, not a folder"),
    (["server.watermark.owners=[0, 12]"], "server.watermark.owners [12] are not client ids in [0, 10)"),
    (["server.watermark.name=fingerprint"], "Unknown watermark scheme 'fingerprint'"),
    (["server.watermark.args={bits: 3}"], "server.watermark: watermark scheme 'feature': unknown argument 'bits'"),
    (["model.name=hf_causal_lm", "data.dataset=shakespeare", "data.max_owners=2", "clients.num_clients=2",
      "server.clients_per_round=2", "data.partition=natural", "model.config={model_type: llama, hidden_size: 16, "
      "intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1}",
      "model.peft={r: 4, rank_tiers: [2, 4], rank_rule: round_robin}", "server.watermark.args={params: lora_}"],
     "reads the adapter by name, so every client must train the global rank"),
])
def test_watermark_config_errors_exit_2(tmp_path, capsys, overrides, message):
    base = [f"output_dir={tmp_path}/runs", "server.watermark.name=feature", f"server.watermark.keys={tmp_path}/keys"]
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    assert main(["validate", str(write_config(tmp_path)), *base, *overrides]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err


def test_an_existing_key_for_another_model_is_not_reused(tmp_path, capsys):
    run_dir, _ = marked_run(tmp_path)
    args = [f"output_dir={tmp_path}/runs", "server.watermark.name=feature", f"server.watermark.keys={tmp_path}/keys",
            "server.watermark.args={num_bits: 32, params: '^0\\.'}"]
    assert main(["validate", str(write_config(tmp_path)), *args]) == 2
    err = capsys.readouterr().err
    assert f"server.watermark.keys: {tmp_path}/keys/client_0.json cannot be reused: it was made for feature" in err


def write_config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("{}\n")
    return path


@pytest.mark.parametrize("overrides, message", [
    (["data.schedule.tasks=[[0, 1], []]"], "data.schedule.tasks[1] is empty"),
    (["data.schedule.tasks=[[0, 1], [10, 11]]"],
     "data.schedule.tasks[1] = [10, 11] selects 0 training and 0 test examples; every task needs both"),
    (["data.schedule.name=seasons"], "data.schedule.name: Unknown data schedule 'seasons'"),
    (["data.schedule.name=rotation", "data.schedule.tasks=[0, north]"],
     "data.schedule: data.schedule.tasks[1] must be an angle in degrees, got 'north'"),
    (["clients.objective=[{name: ewc, args: {lam: -1}}]"], "clients.objective[0]: ewc needs lam >= 0"),
])
def test_schedule_config_errors_exit_2(tmp_path, capsys, overrides, message):
    base = ["data.schedule.name=classes", "data.schedule.tasks=[[0, 1], [2, 3]]"]
    assert main(["validate", str(write_config(tmp_path)), *base, *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
