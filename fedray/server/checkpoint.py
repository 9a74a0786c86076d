"""Checkpoints of the server state: written atomically, the newest N kept.

A checkpoint is one pickle of `ServerState` (plain data: numpy arrays, the
strategy's and selector's state, the generator state, metrics so far), so a
resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from fedray.server.rundir import atomic_write
from fedray.server.state import ServerState

_NAME = re.compile(r"^round_(\d{6})\.pkl$")


def checkpoint_path(directory: Path, server_round: int) -> Path:
    return directory / f"round_{server_round:06d}.pkl"


def save_checkpoint(directory: Path, state: ServerState, keep: int) -> Path:
    path = checkpoint_path(directory, state.server_round)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)

    atomic_write(path, write)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files never match the name)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> ServerState:
    with open(path, "rb") as fh:
        state = pickle.load(fh)
    if not isinstance(state, ServerState):
        raise ValueError(f"{path} is not a fedray checkpoint")
    return state
