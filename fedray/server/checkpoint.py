"""Checkpoints of the server state: written whole, the newest N kept.

A checkpoint is one safetensors file of `ServerState` (arrays as tensors, the
rest as JSON: `serialize`), never a pickle, so loading one cannot run code; a
resumed run continues exactly where it stopped. The directory may be a local
path or a `pyarrow.fs` URI (see `storage`).
"""

from __future__ import annotations

import os
import re

from fedray.server.serialize import CheckpointError, decode, encode
from fedray.server.state import ServerState
from fedray.server.storage import Location

_NAME = re.compile(r"^round_(\d{6})\.safetensors$")
_PICKLE = re.compile(r"^round_(\d{6})\.pkl$")
_TAG = re.compile(r"^round_(\d{6})$")

def checkpoint_path(directory: Location | str | os.PathLike, server_round: int) -> Location:
    return Location.parse(directory) / f"round_{server_round:06d}.safetensors"


def save_checkpoint(directory: Location | str | os.PathLike, state: ServerState, keep: int) -> Location:
    path = checkpoint_path(directory, state.server_round)
    data = encode(state)
    path.write(lambda fh: fh.write(data))
    for old in list_checkpoints(directory)[:-keep]:
        old.delete()
    return path


def list_checkpoints(directory: Location | str | os.PathLike) -> list[Location]:
    """Complete checkpoints, oldest first (temporary files never match the name)."""
    return [p for p in Location.parse(directory).list() if _NAME.match(p.name)]


def prune_tags(directory: Location | str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` DeepSpeed checkpoint folders (`round_NNNNNN`)."""
    import shutil

    tags = sorted((p for p in Location.parse(directory).list() if _TAG.match(p.name)), key=lambda p: p.name)
    for old in tags[:-keep]:
        shutil.rmtree(os.fspath(old), ignore_errors=True)


def latest_checkpoint(directory: Location | str | os.PathLike) -> Location | None:
    found = list_checkpoints(directory)
    if not found and any(_PICKLE.match(p.name) for p in Location.parse(directory).list()):
        raise CheckpointError(Location.parse(directory), "it holds only pickle checkpoints (round_NNNNNN.pkl), "
                              "which fedray no longer loads because loading a pickle can run code")
    return found[-1] if found else None


def load_checkpoint(path: Location | str | os.PathLike) -> ServerState:
    """The state in a checkpoint, validated (`serialize`); CheckpointError naming the file."""
    location = Location.parse(path)
    try:
        data = location.read_bytes()
    except OSError as err:
        raise CheckpointError(location, f"it cannot be read ({err})") from None
    return decode(data, location, ServerState)
