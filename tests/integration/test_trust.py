"""Adversarial: nothing runs that the user did not write, nothing loads that is not what was saved.

Each code-execution path of issue 29 is tried with a command that would create a
marker file; the marker must not appear and the CLI must exit 2 with one message.
Checkpoints are tampered with the way a person with write access to the run
directory could (re-signing the digest where the check behind it is the point).
No Ray: everything here is refused before Ray would start.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from fedray.cli.main import main
from fedray.config.load import to_yaml
from fedray.selection.profiles import ClientProfiles
from fedray.server.checkpoint import load_checkpoint, save_checkpoint
from fedray.server.resume import open_for_resume
from fedray.server.serialize import CheckpointError, content_digest, encode
from fedray.server.state import ServerState
from fedray.server.state_checks import RunShape
from fedray.server.storage import Location
from tests.conftest import REPO, small_config

NUM_CLIENTS = 10


def fedray_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "fedray", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def state(server_round: int, num_params: int = 8, **fields) -> ServerState:
    rng = np.random.default_rng(abs(server_round))
    base = dict(server_round=server_round, params=rng.normal(size=num_params).astype(np.float32),
                transform_state=(), selector_state=None, rng_state={"k": server_round},
                metrics=[{"round": server_round, "eval_loss": 0.5, "clients": [0, 2]}])
    return ServerState(**{**base, **fields})


# ---- code named in files fedray reads back, or in the user's own config ----------------------


def test_a_watermark_key_naming_os_system_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    key = tmp_path / "client_0.json"
    key.write_text(json.dumps({"fedray_watermark": 1, "scheme": "os:system", "args": {"command": f"touch {marker}"},
                               "owner": 0, "secret": "0" * 32, "layout": {}}))
    proc = fedray_cli("watermark", "verify", str(tmp_path), "--key", str(key), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{key}: the key names watermark scheme 'os:system', which is not one of fedray's" in proc.stderr
    assert "a key file holds data, never code" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("key_text, message", [
    (json.dumps({"fedray_watermark": 1, "scheme": "feature", "args": [1, 2], "owner": 0, "secret": "ab" * 16,
                 "layout": {}}), "'args' must be a mapping of argument names to values, got [1, 2]"),
    (json.dumps({"fedray_watermark": 1, "scheme": "feature", "args": {"num_bits": "many"}, "owner": 0,
                 "secret": "ab" * 16, "layout": {}}), "argument 'num_bits' must be int, got 'many'"),
    ("{}", "is not a fedray watermark key (it lacks ['fedray_watermark', 'scheme'"),
    ("[1, 2]", "is not a fedray watermark key (it lacks"),
], ids=["args a list", "args mistyped", "empty key", "a list"])
def test_a_malformed_watermark_key_exits_2(tmp_path, capsys, key_text, message):
    key = tmp_path / "client_0.json"
    key.write_text(key_text)
    assert main(["watermark", "verify", str(tmp_path), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(key) in err and "Traceback" not in err


def copied_run_naming(tmp_path, component: str) -> tuple:
    """A run directory (config.yaml, a checkpoint) with a config.resume-1.yaml someone put there."""
    run_dir = tmp_path / "copied"
    run_dir.mkdir()
    cfg = small_config(tmp_path)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    save_checkpoint(run_dir / "checkpoints", state(1), keep=1)
    marker = tmp_path / "marker"
    text = to_yaml(cfg).replace("strategy:\n    name: fedavg\n    args: {}\n",
                                f"strategy:\n    name: {component}\n    args:\n      command: touch {marker}\n")
    assert component in text
    (run_dir / "config.resume-1.yaml").write_text(text)
    return run_dir, marker


def test_resuming_a_run_directory_whose_config_names_os_system_runs_nothing(tmp_path):
    run_dir, marker = copied_run_naming(tmp_path, "os:system")
    proc = fedray_cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "server.strategy.name = os:system: this configuration names code" in proc.stderr
    assert "config.resume-1.yaml" in proc.stderr and "--allow-code os" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_allowing_the_code_still_never_calls_the_standard_library(tmp_path, capsys):
    run_dir, marker = copied_run_naming(tmp_path, "os:system")
    assert main(["run", "--resume", str(run_dir), "--allow-code", "os"]) == 2
    err = capsys.readouterr().err
    assert "server.strategy: strategy 'os:system' is not a factory fedray may call: module 'os' is part" in err
    assert not marker.exists()


def test_validate_refuses_os_system_and_subprocess_run_in_the_users_own_config(tmp_path):
    marker = tmp_path / "marker"
    config = tmp_path / "q.yaml"
    config.write_text(to_yaml(small_config(tmp_path)))
    proc = fedray_cli("validate", str(config), "server.strategy.name=os:system",
                      f"server.strategy.args={{command: 'touch {marker}'}}",
                      f'clients.transforms=[{{name: "subprocess:run", args: {{args: [touch, "{marker}"]}}}}]',
                      cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "strategy 'os:system' is not a factory fedray may call" in proc.stderr
    assert "clients.transforms[0]: update transform 'subprocess:run' is not a factory fedray may call" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


# ---- checkpoints: nothing built that is not in the table, nothing loaded that was not saved ----


def rewrite(path, edit) -> None:
    """Change the JSON state document of the checkpoint at `path` and re-sign it."""
    from safetensors.torch import load

    data = open(path, "rb").read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    edited = edit(json.loads(header["__metadata__"]["fedray_state"]))
    text = edited if isinstance(edited, str) else json.dumps(edited)
    header["__metadata__"].update(fedray_state=text, fedray_sha256=content_digest(text, load(data)))
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    open(path, "wb").write(struct.pack("<Q", len(raw)) + raw + data[8 + size:])


def test_a_record_naming_fedray_main_is_refused_without_importing_it(tmp_path):
    path = save_checkpoint(tmp_path, state(1, profiles=None), keep=1)

    def name_main(document):
        document["state"]["fields"]["selector_state"] = {"__record__": "fedray.__main__:X", "fields": {}}
        return document

    rewrite(str(path), name_main)
    sys.modules.pop("fedray.__main__", None)
    with pytest.raises(CheckpointError, match="it names 'fedray.__main__:X', which is not a state type of this run"):
        load_checkpoint(path)
    assert "fedray.__main__" not in sys.modules


def test_a_single_flipped_exponent_bit_in_params_is_found(tmp_path):
    path = save_checkpoint(tmp_path, state(1), keep=1)
    data = bytearray(open(str(path), "rb").read())
    (size,) = struct.unpack("<Q", data[:8])
    value = np.float32(state(1).params[0])
    offset = data.index(value.tobytes(), 8 + size)  # the first parameter's bytes
    data[offset + 3] ^= 0x40  # the top exponent bit of a little-endian float32
    open(str(path), "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path} cannot be loaded: its content does not match the SHA-256"):
        load_checkpoint(path)


@pytest.mark.parametrize("saved, reason", [
    (state(3, num_params=7), "params has 7 values, the run's model has 8"),
    (state(3, params=np.zeros(8)), "params is float64[8], not a flat float32 array"),
    (state(3, params=np.zeros((2, 4), np.float32)), "params is float32[2, 4], not a flat float32 array"),
    (state(-5), "server_round is -5, not a completed round"),
    (state(999), "server_round is 999, but the file is named for round 3"),
    (state(3, metrics=[{"round": 3, "eval_loss": "low"}]), "metrics row 0: eval_loss is 'low', not a number"),
    (state(3, profiles=ClientProfiles.create(np.ones(3, np.int64), np.ones(3))),
     "profiles.num_examples has 3 rows, the run has 10 clients"),
    (state(3, wall_s="long"), "wall_s is 'long', not a number of seconds"),
    (state(3, store_rounds={3: [1, 5]}), "store_rounds names store files of rounds after round 3"),
    (state(3, store_rounds={3: ["1"]}), "store_rounds is not a map of checkpoint rounds to lists of store rounds"),
], ids=["size", "dtype", "shape", "round -5", "round 999", "string metric", "profile rows", "wall_s",
        "store round ahead", "store round not a number"])
def test_a_checkpoint_that_does_not_fit_the_run_is_refused_naming_file_and_reason(tmp_path, saved, reason):
    path = tmp_path / "round_000003.safetensors"
    path.write_bytes(encode(saved))  # well-formed and signed: only the run check can tell
    with pytest.raises(CheckpointError, match=rf"{path} cannot be loaded: .*{_escape(reason)}"):
        load_checkpoint(path, RunShape(num_params=8, num_clients=NUM_CLIENTS))


def _escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("edit, reason", [
    (lambda doc: {**doc, "state": _nested(100)}, "nested more than 64 levels deep"),
    (lambda doc: '{"format": "fedray-checkpoint/2", "state": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested more than 64 levels deep"),
    (lambda doc: {**doc, "state": {"__scalar__": "<i8", "value": 10 ** 400}}, "an integer of 1329 bits"),
    (lambda doc: {**doc, "state": {"__scalar__": "<i8", "value": 2 ** 100}}, "too large"),
    (lambda doc: {**doc, "state": {"__scalar__": "|O", "value": 1}}, "a scalar of dtype object is not a number"),
], ids=["deep", "deeper than Python's stack", "huge integer", "overflowing scalar", "object scalar"])
def test_a_malformed_header_is_a_checkpoint_error(tmp_path, edit, reason):
    path = save_checkpoint(tmp_path, state(1), keep=1)
    rewrite(str(path), edit)
    with pytest.raises(CheckpointError, match=_escape(reason)):
        load_checkpoint(path)


def _nested(depth: int):
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


def test_resume_falls_back_past_a_bad_checkpoint_and_sets_it_aside(tmp_path):
    run_dir = tmp_path / "test"
    cfg = small_config(tmp_path)
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    save_checkpoint(run_dir / "checkpoints", state(1), keep=3)
    (run_dir / "checkpoints" / "round_000002.safetensors").write_bytes(encode(state(2, metrics=[{"loss": "x"}])))
    lines: list[str] = []
    point = open_for_resume(Location.parse(run_dir), cfg, fresh=False, console=lines.append)
    assert point.after_round == 1
    assert any("round_000002.safetensors cannot be loaded: metrics row 0: loss is 'x'" in line
               and "kept as round_000002.safetensors.corrupt" in line for line in lines), lines
    assert (run_dir / "checkpoints" / "round_000002.safetensors.corrupt").exists()
