"""`fedray run | validate | compare`: the command line.

User mistakes (bad config, missing files, resources the cluster lacks) print one
clear paragraph to stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fedray.config.errors import ConfigError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedray", description="Federated learning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a federated experiment from a YAML config")
    run.add_argument("config", nargs="?", help="YAML config file (not with --resume)")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. server.rounds=5")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue RUN_DIR from its newest checkpoint, with its config.yaml")

    validate = sub.add_parser("validate", help="check a config and print it resolved")
    validate.add_argument("config", help="YAML config file")
    validate.add_argument("overrides", nargs="*", help="key=value overrides")

    compare = sub.add_parser("compare", help="time-to-accuracy of finished runs, side by side")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument("--target", type=float, default=0.85,
                         help="accuracy to reach (default 0.85)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"fedray {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fedray: interrupted; completed rounds and checkpoints are kept", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from fedray.config.load import load_config
    from fedray.launcher import prepare, run

    config, overrides = args.config, list(args.overrides)
    if args.resume:
        if config is not None and "=" in config:  # `run --resume DIR key=value`
            overrides.insert(0, config)
        elif config is not None:
            raise ConfigError([f"give either CONFIG ({config}) or --resume, not both"], "command line")
        config = os.path.join(args.resume, "config.yaml")
        if not os.path.isfile(config):
            raise ConfigError([f"--resume {args.resume}: no config.yaml there; not a fedray run directory"],
                              "command line")
    elif config is None:
        raise ConfigError(["fedray run needs a CONFIG file (or --resume RUN_DIR)"], "command line")
    cfg = load_config(config, overrides)
    summary = run(prepare(cfg, config), resume=args.resume)
    final = summary.get("final_metrics", {})
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k != "round")
    print(
        f"fedray: {summary['status']} {summary['rounds_completed']} round(s) in "
        f"{summary['wall_s']:.1f} s; {metrics}; results in {summary['run_dir']}"
    )
    return 0 if summary["status"] == "completed" else 1


def _validate(args: argparse.Namespace) -> int:
    from fedray.config.load import load_config, to_yaml
    from fedray.launcher import prepare

    cfg = load_config(args.config, args.overrides)
    prepared = prepare(cfg, args.config)
    print(to_yaml(cfg), end="")
    print(
        f"# ok: {prepared.dataset.num_clients} clients, "
        f"{prepared.dataset.train.num_rows} training / {prepared.dataset.test.num_rows} test "
        f"examples, {prepared.num_params:,} parameters",
        file=sys.stderr,
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from fedray.cli.compare import format_table, summarize_run

    problems = [f"{d}: not a directory" for d in args.run_dirs if not os.path.isdir(d)]
    if problems:
        raise ConfigError(problems, "command line")
    print(format_table([summarize_run(d, args.target) for d in args.run_dirs], args.target))
    return 0


COMMANDS = {"run": _run, "validate": _validate, "compare": _compare}

if __name__ == "__main__":
    sys.exit(main())
