"""`fedray unlearn`: a new run directory whose model no longer reflects some clients.

    fedray unlearn RUN_DIR --clients 3[,7] [--method retrain|federaser] [key=value ...]

- `retrain` (the exact baseline): rerun from the newest checkpoint taken before
  any of the clients first took part (or from scratch), with them in
  `clients.excluded`; everything else, seeds included, as in the source run. The
  result is bit-identical to a run that never selected them from that point.
- `federaser`: rebuild the model from the source's update ledger with short
  calibration rounds of the remaining clients (`fedray.lifecycle.federaser`).

The new run's config is the source's with the clients added to `clients.excluded`
(and the overrides), named `<source name>-unlearned` beside the source unless
`name`/`output_dir` are overridden. The source directory is only read. The new
summary.json gets an `unlearning` section: method, clients, the round it rebuilt
from, rounds run, wall seconds, and held-out accuracy (and backdoor success, for a
`backdoor` run) of the source's model and of the new one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from fedray.cli.source import CLI, SourceRun, Unlearned
from fedray.cli.trust import add_allow_code
from fedray.config.errors import ConfigError
from fedray.config.load import load_run_config, override_value, to_yaml
from fedray.config.schema import RunConfig

if TYPE_CHECKING:  # the rest is imported when the command runs: `fedray --help` stays quick
    from fedray.launcher import PreparedRun
    from fedray.server.rundir import Location


def add_parser(sub) -> None:
    """The `unlearn` subcommand's arguments."""
    parser = sub.add_parser("unlearn", help="a new run without some clients' contribution")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the source run directory (only read)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the new run's config")
    parser.add_argument("--clients", required=True, help="ids of the clients to forget, e.g. 3 or 3,7")
    parser.add_argument("--method", choices=sorted(METHODS), default="retrain",
                        help="retrain (exact, default) or federaser (from the ledger, faster)")
    parser.add_argument("--calibration-ratio", type=float, default=0.5,
                        help="federaser: calibration trains this share of the original local steps (default 0.5)")
    add_allow_code(parser)


def parse_clients(text: str, num_clients: int) -> set[int]:
    """`3` or `3,7` -> {3, 7}; ConfigError for anything but ids of this run's clients."""
    try:
        ids = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise ConfigError([f"--clients {text!r} must be client ids separated by commas, e.g. 3 or 3,7"], CLI) from None
    unknown = sorted(c for c in ids if not 0 <= c < num_clients)
    if not ids or unknown:
        raise ConfigError([f"--clients: unknown client id(s) {unknown or text!r}; the run has clients "
                           f"0..{num_clients - 1}"], CLI)
    return ids


def unlearned_config(source: SourceRun, forget: set[int], overrides: list[str]) -> RunConfig:
    """The source's config with `forget` excluded, named `<name>-unlearned` beside it, then the overrides."""
    excluded = sorted(set(source.cfg.clients.excluded) | forget)
    base = [f"clients.excluded={override_value(excluded)}", f"name={source.cfg.name}-unlearned",
            f"output_dir={source.where.resolve().parent}"]
    return load_run_config(source.config_path, source.allow_code, [*base, *overrides])


def retrain(source: SourceRun, forget: set[int], prepared: "PreparedRun", args: argparse.Namespace) -> Unlearned:
    """Rerun from the newest checkpoint before the clients first took part, without them."""
    import numpy as np

    from fedray.launcher import run
    from fedray.lifecycle.ledger import LEDGER_DIR, ledger_file_round
    from fedray.server.checkpoint import list_checkpoints, load_checkpoint
    from fedray.server.rundir import Location, unique_run_dir
    from fedray.server.state_checks import RunShape

    cfg = prepared.cfg
    start, checkpoint = source.start_before(forget)
    target = unique_run_dir(cfg.output_dir, cfg.name)
    if checkpoint is None:
        summary = run(prepared)  # from scratch: into the same unique directory
    else:
        target.mkdir()
        _copy(checkpoint, target / "checkpoints" / checkpoint.name)
        shards = source.where / "checkpoints" / "foundation" / f"round_{start:06d}"
        if shards.is_dir():  # the foundation model's DeepSpeed checkpoint of that round
            shutil.copytree(shards, Path(target / "checkpoints" / "foundation" / shards.name))
        for path in sorted((source.where / LEDGER_DIR).glob("round_*.parquet")):
            recorded = ledger_file_round(path.name)
            if recorded is not None and recorded <= start:  # the same rounds: the same records
                _copy(Location.parse(path), target / LEDGER_DIR / path.name)
        # a run directory to resume: the checkpoint and, beside it, the config it continues with
        (target / "config.yaml").write_text(to_yaml(cfg))
        summary = run(prepared, resume=str(target))
    assert summary["run_dir"] == str(target), (summary["run_dir"], str(target))
    newest = list_checkpoints(target / "checkpoints")
    params = load_checkpoint(newest[-1], RunShape.of(cfg)).params if newest else np.zeros(0, np.float32)
    return Unlearned(target, start, cfg.server.rounds - start, params, summary["status"])


def _federaser(source: SourceRun, forget: set[int], prepared: "PreparedRun", args: argparse.Namespace) -> Unlearned:
    from fedray.cli.erase import run_federaser

    return run_federaser(source, forget, prepared, args.calibration_ratio)


METHODS: dict[str, Callable[[SourceRun, set[int], "PreparedRun", argparse.Namespace], Unlearned]] = {
    "retrain": retrain,
    "federaser": _federaser,
}


def command(args: argparse.Namespace) -> int:
    """`fedray unlearn`: check everything, run the method, report before/after."""
    from fedray.launcher import prepare
    from fedray.lifecycle.backdoor import Probe
    from fedray.server.checkpoint import list_checkpoints, load_checkpoint

    source = SourceRun.load(args.run_dir, tuple(args.allow_code))
    forget = parse_clients(args.clients, source.cfg.clients.num_clients)
    source.first_round(forget)
    if not 0 < args.calibration_ratio <= 1:
        raise ConfigError([f"--calibration-ratio must be in (0, 1], got {args.calibration_ratio}"], CLI)
    cfg = unlearned_config(source, forget, list(args.overrides))
    started = time.perf_counter()
    prepared = prepare(cfg, source.config_path)
    if not len(prepared.dataset.test_rows):  # a clients-only run (server.evaluation.where: clients)
        raise ConfigError([f"{args.run_dir}: the run has no server split (data.test_fraction=0), and fedray unlearn "
                           "compares the model before and after on it (a run without one cannot be unlearned yet)"],
                          CLI)
    result = METHODS[args.method](source, forget, prepared, args)
    wall_s = time.perf_counter() - started

    probe = Probe(cfg, prepared.dataset.info, prepared.dataset.test)
    newest = list_checkpoints(source.where / "checkpoints")
    before = probe.metrics(load_checkpoint(newest[-1], source.shape).params) if newest else {}
    after = probe.metrics(result.params) if result.params.size else {}
    section = {"method": args.method, "clients": sorted(forget), "source": str(source.where),
               "start_round": result.start_round, "rounds_run": result.rounds_run, "wall_s": wall_s,
               "before": before, "after": after}
    summary_path = result.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary_path.write_text(json.dumps({**summary, "unlearning": section}, indent=2, sort_keys=True))
    print(format_outcome(section, str(result.run_dir)))
    return 0 if result.status == "completed" else 1


def format_outcome(section: dict, run_dir: str) -> str:
    """One line per measured figure, source -> unlearned."""
    lines = [f"fedray unlearn: {section['method']} forgot client(s) {section['clients']} from round "
             f"{section['start_round']} in {section['rounds_run']} round(s), {section['wall_s']:.1f} s; "
             f"results in {run_dir}"]
    for key in ("accuracy", "backdoor_success"):
        if key in section["before"] and key in section["after"]:
            lines.append(f"  {key}: {section['before'][key]:.4f} -> {section['after'][key]:.4f}")
    return "\n".join(lines)


def _copy(source: Location, target: Location) -> None:
    """Copy one file (local or URI) whole."""
    data = source.read_bytes()
    target.write(lambda fh: fh.write(data))
