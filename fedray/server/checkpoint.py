"""Checkpoints of the server state: written whole, the newest N kept, read back newest first.

A checkpoint is one safetensors file of `ServerState` (arrays as tensors, the
rest as JSON: `serialize`), never a pickle, so loading one cannot run code; a
resumed run continues exactly where it stopped. The directory may be a local
path or a `pyarrow.fs` URI (see `storage`).

Writes are atomic, but a file can still be damaged afterwards (a disk that
filled up on a store without atomic renames, a copy cut short, a hand edit).
`load_checkpoint` turns every such case into one error type, `CheckpointError`,
and `load_newest` walks back to the newest checkpoint that loads; neither knows
the file format beyond `load_checkpoint` itself.
"""

from __future__ import annotations

import os
import re
from typing import Callable, NamedTuple

from fedray.server.serialize import CheckpointError, decode, encode
from fedray.server.state import ServerState
from fedray.server.state_checks import RunShape, state_problems
from fedray.server.state_types import FEDRAY_ONLY, StateTypes
from fedray.server.storage import Location

_NAME = re.compile(r"^round_(\d{6})\.safetensors$")
_PICKLE = re.compile(r"^round_(\d{6})\.pkl$")
_TAG = re.compile(r"^round_(\d{6})$")
CORRUPT_SUFFIX = ".corrupt"
"""Appended to a checkpoint that does not load: kept for inspection, never listed again."""


class Loaded(NamedTuple):
    """A checkpoint read back: where it was and the state it held."""

    path: Location
    state: ServerState


def checkpoint_path(directory: Location | str | os.PathLike, server_round: int) -> Location:
    return Location.parse(directory) / f"round_{server_round:06d}.safetensors"


def checkpoint_round(path: Location) -> int:
    """The round a checkpoint file holds, from its name."""
    return int(_NAME.match(path.name).group(1))


def save_checkpoint(directory: Location | str | os.PathLike, state: ServerState, keep: int,
                    types: StateTypes = FEDRAY_ONLY) -> Location:
    """Write `state` (its records all in `types`) and keep only the newest `keep` files."""
    path = checkpoint_path(directory, state.server_round)
    data = encode(state, types)
    path.write(lambda fh: fh.write(data))
    for old in list_checkpoints(directory)[:-keep]:
        old.delete()
    return path


def list_checkpoints(directory: Location | str | os.PathLike) -> list[Location]:
    """Checkpoint files, oldest first (temporary and set-aside files never match the name)."""
    return [p for p in Location.parse(directory).list() if _NAME.match(p.name) and not p.is_dir()]


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


def load_checkpoint(path: Location | str | os.PathLike, shape: RunShape = RunShape()) -> ServerState:
    """The state in a checkpoint, validated (`serialize`: digest, classes in `shape.types`)
    and checked against the run (`state_checks`); CheckpointError naming file and reason."""
    location = Location.parse(path)
    try:
        data = location.read_bytes()
    except OSError as err:
        raise CheckpointError(location, f"it cannot be read ({err})") from None
    state = decode(data, location, ServerState, shape.types)
    named = _NAME.match(location.name)
    problems = state_problems(state, shape, int(named.group(1)) if named else None)
    if problems:
        raise CheckpointError(location, "; ".join(problems))
    return state


def load_newest(directory: Location | str | os.PathLike,
                on_corrupt: Callable[[CheckpointError], None] = lambda err: None,
                shape: RunShape = RunShape()) -> Loaded | None:
    """The newest checkpoint that loads and fits `shape`, walking back past the others
    (each reported to `on_corrupt`); None if there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return Loaded(path, load_checkpoint(path, shape))
        except CheckpointError as err:
            on_corrupt(err)
    return None


def set_aside(path: Location) -> Location:
    """Rename a corrupt checkpoint to `<name>.corrupt`, out of every listing but still there."""
    target = path.sibling(path.name + CORRUPT_SUFFIX)
    path.rename(target)
    return target
