"""Does a loaded server state fit the run that loads it? Checked before a single value is used.

A checkpoint that decodes (`serialize`) may still not be this run's: params of
another model, profiles of another client count, a round the file name does not
say, metrics that are not numbers. `state_problems` lists what does not fit, as
reasons for a `CheckpointError`, so a resume falls back past the file instead of
failing rounds later with an error that does not name it. The checks read fields
by name and skip those a `ServerState` does not have, so they hold whatever fields
it gains or loses.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from fedray.server.state_types import FEDRAY_ONLY, StateTypes


@dataclasses.dataclass(frozen=True)
class RunShape:
    """What a checkpoint must fit; None: not known to the caller, not checked."""

    types: StateTypes = FEDRAY_ONLY
    """The classes it may construct (`StateTypes.of(cfg)` for a run with plug-ins)."""
    num_params: int | None = None
    """Length of the global model's flat travelling parameters."""
    num_clients: int | None = None
    """`clients.num_clients`: rows of every per-client array."""

    @classmethod
    def of(cls, cfg: Any, num_params: int | None = None) -> "RunShape":
        """The shape of the run `cfg` describes (its plug-ins' declared state types included)."""
        return cls(StateTypes.of(cfg), num_params, cfg.clients.num_clients)


def state_problems(state: Any, shape: RunShape, file_round: int | None) -> list[str]:
    """Why `state` cannot be this run's (empty: it fits)."""
    problems = _round_problems(getattr(state, "server_round", None), file_round)
    problems += _params_problems(getattr(state, "params", None), shape.num_params)
    if hasattr(state, "metrics"):
        problems += _metrics_problems(state.metrics)
    for name in ("wall_s", "sim_time_s"):
        value = getattr(state, name, 0.0)
        if not _is_number(value) or not value >= 0:
            problems.append(f"{name} is {value!r}, not a number of seconds")
    history = getattr(state, "norm_history", [])
    if not isinstance(history, list) or not all(_is_number(v) for v in history):
        problems.append("norm_history holds values that are not numbers")
    if shape.num_clients is not None:
        problems += _client_problems(state, shape.num_clients)
    return problems + _store_rounds_problems(getattr(state, "store_rounds", {}), getattr(state, "server_round", None))


def _store_rounds_problems(store_rounds: Any, server_round: Any) -> list[str]:
    """Checkpoint rounds -> store rounds, none after the state's own round (a resume
    deletes the store files it does not name: a wrong entry would lose clients' states)."""
    def is_round(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(store_rounds, dict) or not all(
            is_round(k) and isinstance(v, list) and all(is_round(r) for r in v) for k, v in store_rounds.items()):
        return ["store_rounds is not a map of checkpoint rounds to lists of store rounds"]
    if isinstance(server_round, int) and any(r > server_round for k, v in store_rounds.items() for r in [k, *v]):
        return [f"store_rounds names store files of rounds after round {server_round}, the state's own"]
    return []


def _round_problems(server_round: Any, file_round: int | None) -> list[str]:
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        return [f"server_round is {server_round!r}, not a completed round (1 or more)"]
    if file_round is not None and server_round != file_round:
        return [f"server_round is {server_round}, but the file is named for round {file_round}"]
    return []


def _params_problems(params: Any, num_params: int | None) -> list[str]:
    if not isinstance(params, np.ndarray) or params.dtype != np.float32 or params.ndim != 1:
        described = (f"{params.dtype}{list(params.shape)}" if isinstance(params, np.ndarray)
                     else type(params).__name__)
        return [f"params is {described}, not a flat float32 array"]
    if num_params is not None and params.size != num_params:
        return [f"params has {params.size} values, the run's model has {num_params}"]
    return []


def _metrics_problems(metrics: Any) -> list[str]:
    """Each row a mapping of column names to numbers (or lists of ids), as metrics.parquet holds."""
    if not isinstance(metrics, list):
        return [f"metrics is a {type(metrics).__name__}, not a list of rows"]
    for i, row in enumerate(metrics):
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
            return [f"metrics row {i} is not a mapping of column names"]
        for key, value in row.items():
            ok = value is None or _is_number(value) or (
                isinstance(value, (list, tuple)) and all(_is_number(v) for v in value))
            if not ok:
                return [f"metrics row {i}: {key} is {value!r}, not a number"]
    return []


def _client_problems(state: Any, num_clients: int) -> list[str]:
    """Per-client arrays have a row per client, per-client maps only ids of this run."""
    out = []
    profiles = getattr(state, "profiles", None)
    if profiles is not None:
        for field in dataclasses.fields(profiles):
            column = getattr(profiles, field.name)
            if isinstance(column, np.ndarray) and column.shape[:1] != (num_clients,):
                out.append(f"profiles.{field.name} has {len(column)} rows, the run has {num_clients} clients")
                break
    for name in ("client_states", "client_refs"):
        ids = getattr(state, name, {})
        unknown = [c for c in ids if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_clients]
        if unknown:
            out.append(f"{name} holds client ids {unknown[:5]}, the run has clients 0..{num_clients - 1}")
    return out


def _is_number(value: Any) -> bool:
    """An int or float, numpy's included (NaN and inf too: rounds without an evaluation)."""
    return isinstance(value, numbers.Real)
