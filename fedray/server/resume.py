"""Resuming a run directory: what may change, which checkpoint to continue from, and the record.

A resume is checked before anything in the run directory is touched. Overrides
are compared with the run's current configuration (config.yaml, or the newest
config.resume-N.yaml); only the keys in `RESUMABLE` may differ. An accepted
change is recorded in a new config.resume-N.yaml, so config.yaml always says how
the run started and the files together say how it went on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from omegaconf import OmegaConf

from fedray.config.errors import ConfigError
from fedray.config.load import load_config_text, load_run_config, to_yaml
from fedray.config.schema import RunConfig
from fedray.server.checkpoint import CheckpointError, checkpoint_round, latest_checkpoint, load_newest, set_aside
from fedray.server.rundir import RunDirectory
from fedray.server.state_checks import RunShape
from fedray.server.storage import Location

RESUMABLE: tuple[str, ...] = (
    "server.rounds",
    "server.budget_mb",
    "server.eval_every",
    "server.checkpoint_every",
    "server.keep_checkpoints",
    "server.round_timeout_s",
    "server.max_round_retries",
    "server.max_restarts",
    "server.resources",
    "server.foundation_model.resources",
    "server.foundation_model.placement_strategy",
    "server.foundation_model.ready_timeout_s",
    "server.foundation_model.timeout_s",
    "clients.resources",
    "clients.pinned",
    "clients.placement",
    "clients.pool_size",
    "clients.max_restarts",
    "ray",
)
"""Config keys (or whole sections) a resume may change: how long the run goes on, how
often it evaluates and checkpoints, timeouts and restarts, and where its actors run
(placements give identical results). Everything else either shapes the saved state
(data, model, clients, strategy, selector, seed, ...) or is the experiment itself, so a
resume that changes it is refused; a key added to the schema is refused until listed here."""


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues."""

    after_round: int
    """The round of the checkpoint it continues from (0: from the start, with `fresh`)."""
    changed: tuple[str, ...]
    """Config keys that differ from the run's current configuration (all in RESUMABLE)."""


def current_config(run_dir: Location | str) -> tuple[Location, RunConfig]:
    """The run's current configuration file and its content; ConfigError if it has none."""
    files = RunDirectory(run_dir).config_files()
    if not files:
        raise ConfigError([f"--resume {run_dir}: no config.yaml there; not a fedray run directory"],
                          "command line")
    return files[-1], load_config_text(files[-1].read_text(), str(files[-1]))


def resume_config(run_dir: Location | str, overrides: Iterable[str] = (), allow_code: Iterable[str] = ()) -> RunConfig:
    """The run's current configuration with `overrides` applied, refused (ConfigError) if
    they change anything outside RESUMABLE, or if it names code that `allow_code`
    (`--allow-code`) does not cover (`fedray.config.trust`). Reads only."""
    path, base = current_config(run_dir)
    overrides = list(overrides)
    _refuse_overrides(base, overrides, str(run_dir))  # before cross-field checks blame another key
    cfg = load_run_config(path, allow_code, overrides, text=path.read_text())
    changed_keys(base, cfg, str(run_dir))
    return cfg


def _refuse_overrides(base: RunConfig, overrides: list[str], run_dir: str) -> None:
    """Refuse an override of a key a resume may not change, naming it and its new value
    (checked on the text, so `clients.num_clients=5` is not first reported as breaking
    `server.clients_per_round`)."""
    old = _flatten(base)
    refused = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        known = _lookup(old, key.split(".", 1)[0]) is not _ABSENT  # an unknown key is reported as one
        if sep and known and not resumable(key) and _lookup(old, key) != (new := _parsed(value)):
            refused.append(f"{key} ({_show(_lookup(old, key))} -> {_show(new)})")
    if refused:
        raise ConfigError([_refusal(", ".join(refused), run_dir)], "command line")


def _parsed(value: str) -> Any:
    """An override's value as YAML reads it (its text if it is not valid YAML)."""
    import yaml

    try:
        return yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return value


def _lookup(flat: dict[str, Any], key: str) -> Any:
    """A key's value in a flattened config: a leaf, a section rebuilt from its leaves, or _ABSENT."""
    if key in flat:
        return flat[key]
    inside = {k[len(key) + 1:]: v for k, v in flat.items() if k.startswith(key + ".")}
    return inside if inside else _ABSENT


def _refusal(shown: str, run_dir: str) -> str:
    return (f"--resume {run_dir}: {shown} cannot change on resume: the checkpoint and the rest "
            "of the run depend on it. Start a new run for a different experiment; a resume may "
            "change only " + ", ".join(resumable_keys()))


def already_completed(run_dir: Location | str, cfg: RunConfig) -> int | None:
    """The rounds a run directory completed, if its summary.json says it completed and a
    checkpoint holds its last round with nothing left to run under `cfg` (then a resume
    has nothing to do and needs no Ray); else None."""
    import json

    directory = RunDirectory(run_dir)
    try:
        summary = json.loads((directory.location / "summary.json").read_text())
        newest = checkpoint_round(latest_checkpoint(directory.checkpoints))
    except (OSError, ValueError, TypeError, AttributeError, CheckpointError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "completed":
        return None
    done = summary.get("rounds_completed")
    return done if done == newest and isinstance(done, int) and done >= cfg.server.rounds else None


def changed_keys(base: RunConfig, cfg: RunConfig, run_dir: str) -> tuple[str, ...]:
    """Keys whose values differ; ConfigError naming those a resume may not change."""
    old, new = _flatten(base), _flatten(cfg)
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT))
    differ = [k for k in differ if not any(k.startswith(d + ".") for d in differ)]  # a whole section once
    refused = [k for k in differ if not resumable(k)]
    if refused:
        shown = ", ".join(f"{k} ({_show(_lookup(old, k))} -> {_show(_lookup(new, k))})" for k in refused)
        raise ConfigError([_refusal(shown, run_dir)], "command line")
    return tuple(differ)


def resumable(key: str) -> bool:
    """Whether `key` is in RESUMABLE or inside a section that is."""
    return any(key == p or key.startswith(p + ".") for p in RESUMABLE)


def open_for_resume(run_dir: Location, cfg: RunConfig, fresh: bool,
                    console: Callable[[str], None], num_params: int | None = None) -> ResumePoint:
    """Check a resume of `run_dir` with `cfg` and find the newest checkpoint that loads,
    setting corrupt ones aside (said on the console and in log.txt).

    Nothing is written unless the resume can go ahead. Without a loadable checkpoint the
    resume is refused unless `fresh` asks to start the run again from round 1."""
    _, base = current_config(run_dir)
    changed = changed_keys(base, cfg, str(run_dir))
    directory = RunDirectory(run_dir)
    corrupt: list[CheckpointError] = []
    try:
        shape = RunShape.of(cfg, num_params)
    except ValueError as err:
        raise ConfigError([str(err)], "command line") from None
    loaded = load_newest(directory.checkpoints, corrupt.append, shape)
    if loaded is None and not fresh:
        found = ("only checkpoints that cannot be loaded (" + "; ".join(str(e) for e in corrupt) + ")"
                 if corrupt else f"no checkpoint in {directory.checkpoints}")
        raise ConfigError([f"--resume {run_dir}: {found}, so there is nothing to resume from. "
                           "`fedray run --resume RUN_DIR --fresh` starts it again from round 1 "
                           "(replacing its metrics); `fedray run RUN_DIR/config.yaml` starts a new "
                           "run beside it"], "command line")
    after = 0 if loaded is None else checkpoint_round(loaded.path)
    if after > cfg.server.rounds:
        raise ConfigError([f"--resume {run_dir}: server.rounds={cfg.server.rounds}, but its newest "
                           f"checkpoint is after round {after}"], "command line")
    going_on = f"continuing after round {after}" if loaded is not None else "starting again from round 1"
    for err in corrupt:
        moved = set_aside(err.path)
        note = f"{err}; kept as {moved.name}, {going_on}"
        console(f"fedray: warning: {note}")
        directory.log(note)
    return ResumePoint(after, changed)


def record_resume(run_dir: Location, cfg: RunConfig, point: ResumePoint, console: Callable[[str], None]) -> None:
    """Write config.resume-N.yaml if the resume changed anything; config.yaml is never rewritten."""
    if point.changed:
        record = RunDirectory(run_dir).write_resume_config(
            f"# fedray run --resume after round {point.after_round}: changed {', '.join(point.changed)}\n"
            + to_yaml(cfg))
        console(f"fedray: {', '.join(point.changed)} changed on resume; recorded in {record.name}")


_ABSENT = object()


def _flatten(cfg: RunConfig) -> dict[str, Any]:
    """Dotted key -> value (lists and empty mappings as leaves)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True), "")
    return out


def resumable_keys() -> list[str]:
    """RESUMABLE as users write keys: a section as `section.*`."""
    leaves = _flatten(RunConfig())
    return [key if key in leaves else f"{key}.*" for key in RESUMABLE]


def _show(value: Any) -> str:
    return "unset" if value is _ABSENT else repr(value)
