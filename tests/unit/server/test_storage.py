"""Run directories on `pyarrow.fs` URIs: the same files as on a local path."""

import json

import numpy as np
import pyarrow.fs as pafs
import pytest

from fedray.server.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from fedray.server.rundir import RunDirectory, read_parquet, unique_run_dir
from fedray.server.state import ServerState
from fedray.server.storage import Location, join_uri


@pytest.mark.parametrize(
    "uri, parts, expected",
    [
        ("s3://bucket/runs", ("exp",), "s3://bucket/runs/exp"),
        ("s3://bucket", ("exp", "checkpoints"), "s3://bucket/exp/checkpoints"),
        ("s3://bucket/runs/?region=eu-west-1", ("exp",), "s3://bucket/runs/exp?region=eu-west-1"),
        ("file:///tmp/runs", ("exp",), "file:///tmp/runs/exp"),
    ],
)
def test_join_uri_keeps_scheme_bucket_and_query(uri, parts, expected):
    assert join_uri(uri, *parts) == expected


def test_plain_paths_and_file_uris_are_local(tmp_path):
    plain = Location.parse("runs")
    assert plain.is_local and str(plain / "exp") == "runs/exp"
    uri = Location.parse(f"file://{tmp_path}")
    assert uri.is_local and uri.path == str(tmp_path)
    child = uri / "exp"
    assert str(child) == f"file://{tmp_path}/exp" and child.path == f"{tmp_path}/exp"


def mock_root():
    """A remote-style location on pyarrow's in-memory mock filesystem (one instance,
    shared by every child, as one S3 bucket would be)."""
    fs = pafs._MockFileSystem()
    return Location("bucket/runs", "mock://bucket/runs", fs)


def state(r):
    return ServerState(r, np.full(3, r, dtype=np.float32), None, None, {}, [{"round": r}], 1.0)


def test_a_run_directory_on_an_object_store():
    root = mock_root()
    run = RunDirectory(unique_run_dir(root, "exp"))
    assert str(run.location) == "mock://bucket/runs/exp" and not run.location.is_local
    run.write_config("server:\n  rounds: 2\n")
    run.write_metrics([{"round": 1, "eval_accuracy": 0.5}])
    run.write_clients([{"client_id": 0, "node_id": "n1"}])
    run.write_summary({"status": "completed"})
    run.log("first")
    run.log("second")  # no append on object stores: rewritten whole
    for r in (1, 2, 3):
        save_checkpoint(run.checkpoints, state(r), keep=2)

    assert read_parquet(run.metrics_path).to_pylist() == [{"round": 1, "eval_accuracy": 0.5}]
    assert read_parquet(run.clients_path).column("node_id").to_pylist() == ["n1"]
    assert json.loads((run.location / "summary.json").read_text()) == {"status": "completed"}
    assert (run.location / "log.txt").read_text() == "first\nsecond\n"
    assert [p.name for p in list_checkpoints(run.checkpoints)] == ["round_000002.safetensors", "round_000003.safetensors"]
    assert load_checkpoint(list_checkpoints(run.checkpoints)[-1]).server_round == 3
    assert unique_run_dir(root, "exp").name == "exp-2"  # the first one holds a run


def test_a_failed_write_leaves_the_old_object():
    target = mock_root() / "summary.json"
    target.write_text("old")

    def explode(fh):
        fh.write(b"half")
        raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError):
        target.write(explode)
    assert target.read_text() == "old"


def test_remote_locations_are_not_paths():
    with pytest.raises(TypeError, match="not on the local filesystem"):
        open(mock_root() / "x")  # noqa: SIM115
