"""Pickle-free checkpoints: a round trip is bit-identical, and a tampered, corrupt or
truncated file is refused with its path (exit 2 from the CLI, before Ray starts)."""

import json
import math
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from fedray.cli.main import main
from fedray.config.load import to_yaml
from fedray.privacy.clip import ClipState
from fedray.privacy.dpsgd import Account
from fedray.selection.profiles import ClientProfiles
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fedray.server.serialize import CheckpointError, content_digest, decode, encode
from fedray.server.state import ServerState
from fedray.strategy.algorithm import KeptState
from fedray.transforms import AdamState
from fedray.types import StateRef
from tests.conftest import small_config


def full_state() -> ServerState:
    """A state holding every kind of piece a run puts in one."""
    rng = np.random.default_rng(0)
    profiles = ClientProfiles.create(np.array([5, 7, 9]), np.array([1.0, 2.0, 3.0]), None,
                                     np.array(["phone", "laptop", "phone"], dtype=object))
    profiles.last_train_loss[1] = 0.25
    optimizer = {"state": {0: {"momentum_buffer": torch.randn(4, 3), "step": torch.tensor(3.0)}},
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0], "nesterov": False}]}
    generator = np.random.default_rng(123)
    generator.random(5)
    return ServerState(
        server_round=4,
        params=rng.normal(size=1000).astype(np.float32),
        transform_state=((), AdamState(7, rng.normal(size=10).astype(np.float32),
                                       rng.random(10).astype(np.float32))),
        selector_state=200,
        rng_state=generator.bit_generator.state,
        aggregator_state=KeptState(optimizer, (rng.normal(size=1000).astype(np.float32),), ((), ()),
                                   Account(((1.1, 0.25, 24),), 2.5)),  # any state: torch tensors, records
        term_states=(ClipState(4, 0.731), rng.normal(size=1000).astype(np.float32)),
        merges=[rng.normal(size=(2, 3)).astype(np.float32)],
        metrics=[{"round": 1, "eval_loss": float("nan"), "clients": [0, 2], "dp_epsilon": math.inf,
                  "train_loss": np.float64(0.1 + 0.2)}],
        norm_history=[0.5, 1 / 3],
        client_refs={2: StateRef(3, "5f" * 16, 2.5)},
        store_rounds={2: [0, 2], 4: [3, 4]},
        wall_s=12.5,
        profiles=profiles,
        sim_time_s=99.25,
        distiller_rng=None,
    )


def assert_same(a, b, where="state"):
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f") if a.dtype != object else a.tolist() == b.tolist()
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, float):
        assert a == b or (math.isnan(a) and math.isnan(b)), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            assert_same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    else:
        assert a == b, where


def test_a_checkpoint_round_trips_bit_identically(tmp_path):
    state = full_state()
    path = save_checkpoint(tmp_path, state, keep=3)
    assert path.name == "round_000004.safetensors"
    loaded = load_checkpoint(path)
    assert_same(state, loaded)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = loaded.rng_state
    original = np.random.default_rng()
    original.bit_generator.state = state.rng_state
    assert np.array_equal(resumed.random(10), original.random(10))
    assert b"pickle" not in path.read_bytes() and not path.read_bytes().startswith(b"\x80")


def rewrite_header(data: bytes, edit, resign: bool = True) -> bytes:
    """The file with its JSON state document changed by `edit(document) -> document`, and
    (`resign`) its digest recomputed, as a deliberate tamperer would: the checks behind
    the digest must hold on their own."""
    from safetensors.torch import load

    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    document = json.loads(header["__metadata__"]["fedray_state"])
    text = json.dumps(edit(document))
    header["__metadata__"]["fedray_state"] = text
    if resign:
        header["__metadata__"]["fedray_sha256"] = content_digest(text, load(data))
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size:]


def name_os_system(document):
    text = json.dumps(document).replace("fedray.privacy.clip:ClipState", "os:system")
    return json.loads(text)


def other_shape(document):
    document["state"]["fields"]["params"]["shape"] = [999]
    return document


def other_dtype(document):
    document["state"]["fields"]["params"]["dtype"] = "<f8"
    return document


def extra_field(document):
    document["state"]["fields"]["run_this"] = "please"
    return document


@pytest.mark.parametrize("tamper, expected", [
    (lambda d: rewrite_header(d, name_os_system), "names 'os:system', which is not a state type of this run"),
    (lambda d: rewrite_header(d, name_os_system, resign=False), "does not match the SHA-256 digest"),
    (lambda d: rewrite_header(d, other_shape), "array 'state/params' has shape [1000], its state says [999]"),
    (lambda d: rewrite_header(d, other_dtype), "array 'state/params' has dtype float32, its state says <f8"),
    (lambda d: rewrite_header(d, extra_field), "unexpected keyword argument 'run_this'"),
    (lambda d: d[: len(d) // 2], "corrupt"),
    (lambda d: d[:5], "truncated"),
    (lambda d: pickle.dumps(full_state()), "header runs past the end"),
    (lambda d: rewrite_header(d, lambda doc: {**doc, "format": "other/9"}), "format 'other/9'"),
], ids=["foreign class", "unsigned edit", "shape", "dtype", "unknown field", "corrupt", "truncated", "a pickle", "format"])
def test_a_tampered_checkpoint_is_refused_naming_the_file(tmp_path, tamper, expected):
    path = save_checkpoint(tmp_path, full_state(), keep=3)
    path_str = str(path)
    with open(path_str, "rb") as fh:
        data = fh.read()
    with open(path_str, "wb") as fh:
        fh.write(tamper(data))
    with pytest.raises(CheckpointError, match=re.escape(expected)) as caught:
        load_checkpoint(path)
    assert path_str in str(caught.value)


def test_only_the_table_of_state_types_is_ever_built():
    from fedray.server.state_types import StateTypes

    types = StateTypes()
    for name in ("fedray.server.checkpoint:load_checkpoint", "subprocess:Popen", "fedray.__main__:X"):
        with pytest.raises(ValueError, match="not a state type of this run"):
            types.resolve(name)
    assert types.resolve("fedray.privacy.clip:ClipState") is ClipState
    with pytest.raises(TypeError, match="cannot checkpoint a function"):
        encode(ServerState(0, np.zeros(1, np.float32), lambda: 0, (), {}))


def test_old_pickle_checkpoints_are_reported_not_loaded(tmp_path):
    (tmp_path / "round_000001.pkl").write_bytes(pickle.dumps({"not": "loaded"}))
    with pytest.raises(CheckpointError, match="only pickle checkpoints"):
        latest_checkpoint(tmp_path)


def test_resuming_a_tampered_run_exits_2_before_ray_starts(tmp_path, capsys):
    import ray

    cfg = small_config(tmp_path)
    run_dir = tmp_path / "test"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    path = save_checkpoint(run_dir / "checkpoints", full_state(), keep=3)
    data = open(str(path), "rb").read()
    open(str(path), "wb").write(rewrite_header(data, name_os_system))
    ray_was_up = ray.is_initialized()  # a whole-suite session may share one Ray already
    assert main(["run", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {path} cannot be loaded" in err and "Traceback" not in err
    assert ray.is_initialized() is ray_was_up


@pytest.mark.parametrize("value", [
    np.array(3.0), np.zeros(0, np.float32), np.zeros((2, 0)), np.broadcast_to(np.float32(1), (1,)),
    torch.tensor(2.0, dtype=torch.bfloat16), torch.zeros(1).expand(1), torch.zeros(0),
], ids=["0-d", "empty", "empty 2-d", "broadcast", "bf16 0-d", "expanded", "empty tensor"])
def test_arrays_of_any_size_and_stride_round_trip_under_the_digest(value):
    """Empty and one-element arrays may carry any stride; the digest reads their bytes all the same."""
    (loaded,) = decode(encode((value,)), "f")
    assert_same(np.array(value) if isinstance(value, np.ndarray) else value, loaded)
