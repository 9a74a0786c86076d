"""Checkpoints of the server state: written whole, the newest N kept.

A checkpoint is one pickle of `ServerState` (plain data: numpy arrays, the
strategy's and selector's state, the generator state, metrics so far), so a
resumed run continues exactly where it stopped. The directory may be a local
path or a `pyarrow.fs` URI (see `storage`).
"""

from __future__ import annotations

import os
import pickle
import re

from fedray.server.state import ServerState
from fedray.server.storage import Location

_NAME = re.compile(r"^round_(\d{6})\.pkl$")
_TAG = re.compile(r"^round_(\d{6})$")

def checkpoint_path(directory: Location | str | os.PathLike, server_round: int) -> Location:
    return Location.parse(directory) / f"round_{server_round:06d}.pkl"


def save_checkpoint(directory: Location | str | os.PathLike, state: ServerState, keep: int) -> Location:
    path = checkpoint_path(directory, state.server_round)
    path.write(lambda fh: pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL))
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
    return found[-1] if found else None


def load_checkpoint(path: Location | str | os.PathLike) -> ServerState:
    location = Location.parse(path)
    state = pickle.loads(location.read_bytes())
    if not isinstance(state, ServerState):
        raise ValueError(f"{location} is not a fedray checkpoint")
    return state
