"""Experiment grids: every combination of values becomes its own run (and run directory).

The grid comes from `--grid key=v1,v2` arguments and/or the config's `sweep.grid`
section (an argument replaces the section's values for the same key). Each
combination is a list of `key=value` overrides plus its own `name`, so every
run is reproducible on its own with `fedray run CONFIG overrides...`. All
combinations are validated before the first one starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Callable, Mapping, Sequence

from fedray.config.errors import ConfigError
from fedray.config.load import load_config, override_value
from fedray.config.schema import RunConfig

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One combination: its run name, the overrides that make it, and its resolved config."""

    name: str
    overrides: tuple[str, ...]
    """`key=value` for each grid key, then `name=...`; applied after the user's overrides."""
    cfg: RunConfig


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: `[32],[64,64]` -> `['[32]', '[64,64]']`."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid_args(args: Sequence[str]) -> dict[str, list[str]]:
    """`--grid key=v1,v2` arguments -> {key: [v1, v2]}."""
    grid, problems = {}, []
    for arg in args:
        key, sep, values = arg.partition("=")
        if not sep or not key or not values:
            problems.append(f"--grid {arg!r} must look like key=v1,v2,...")
            continue
        grid[key.strip()] = split_values(values)
    if problems:
        raise ConfigError(problems)
    return grid


def expand(base_name: str, grid: Mapping[str, Sequence[str]]) -> list[tuple[str, tuple[str, ...]]]:
    """Every combination as (run name, overrides), in grid order, the last key varying fastest."""
    keys = list(grid)
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) < len(keys):  # two keys end alike: name runs by full key
        short = {k: k for k in keys}
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        tag = "-".join(f"{short[k]}={_safe(v)}" for k, v in zip(keys, values))
        name = f"{base_name}-{tag}"
        runs.append((name, (*(f"{k}={v}" for k, v in zip(keys, values)), f"name={name}")))
    return runs


def plan_sweep(config: str, overrides: Sequence[str], grid_args: Sequence[str]) -> list[SweepRun]:
    """Resolve and validate every run of the sweep; all problems in one ConfigError."""
    base = load_config(config, overrides)
    grid = {k: [override_value(v) for v in values] for k, values in base.sweep.grid.items()}
    grid.update(parse_grid_args(grid_args))
    if not grid:
        raise ConfigError(["nothing to sweep: give --grid key=v1,v2 or a sweep.grid section"], config)
    combinations = expand(base.name, grid)
    runs, problems = [], {}
    for name, run_overrides in combinations:
        try:
            runs.append(SweepRun(name, run_overrides, load_config(config, [*overrides, *run_overrides])))
        except ConfigError as err:
            for problem in err.problems:
                problems.setdefault(problem, []).append(name)
    if problems:  # a problem every run shares is told once
        raise ConfigError([p if len(names) == len(combinations) else f"{', '.join(names)}: {p}"
                           for p, names in problems.items()], config)
    return runs


def run_local(runs: Sequence[SweepRun], console: Callable[[str], None] = print, verbose: bool = False,
              reuse: bool = True) -> list[dict]:
    """Run each combination in turn on one local (or joined) Ray; one summary per run.

    With `reuse`, a completed run's client actors stay up and the next run whose
    actors ask for the same resources takes them over (loading its own config and
    shards), so only the first run pays for starting them; the results are the same
    as separate runs'. A run that fails (bad data, resources it cannot get) is
    reported and the sweep goes on; its summary says `status: failed` and why.
    """
    from fedray.client.pool import WarmActors
    from fedray.launcher import RayLogs, prepare, ray_session, run

    summaries = []
    warm = WarmActors() if reuse else None
    with RayLogs(verbose) as logs, ray_session(runs[0].cfg):
        try:
            for i, sweep_run in enumerate(runs, 1):
                console(f"=== sweep run {i}/{len(runs)}: {sweep_run.name} ({' '.join(sweep_run.overrides[:-1])})")
                try:
                    summaries.append(run(prepare(sweep_run.cfg), console, warm=warm, logs=logs))
                except ConfigError as err:
                    console(f"  failed: {err}")
                    summaries.append({"status": "failed", "error": str(err), "name": sweep_run.name})
        finally:
            if warm is not None:
                warm.release()
    return summaries


def _safe(value: str) -> str:
    return _UNSAFE.sub("_", value).strip("_") or "_"
