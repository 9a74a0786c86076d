"""`fedray run | validate | export`: the command line.

User mistakes (bad config, missing files, resources the cluster lacks) print one
clear paragraph to stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fedray.config.errors import ConfigError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedray", description="Federated learning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a federated experiment from a YAML config")
    run.add_argument("config", help="YAML config file")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. server.rounds=5")

    validate = sub.add_parser("validate", help="check a config and print it resolved")
    validate.add_argument("config", help="YAML config file")
    validate.add_argument("overrides", nargs="*", help="key=value overrides")

    export = sub.add_parser("export", help="write a LoRA run's global adapter in PEFT format")
    export.add_argument("run_dir", help="run directory (holds config.yaml and checkpoints/)")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--merged", action="store_true", help="also write the merged model")
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

    cfg = load_config(args.config, args.overrides)
    summary = run(prepare(cfg, args.config))
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


def _export(args: argparse.Namespace) -> int:
    from fedray.server.export import export_run

    try:
        paths = export_run(args.run_dir, args.out, merged=args.merged)
    except (ValueError, OSError) as err:
        print(f"fedray export: {err}", file=sys.stderr)
        return EXIT_USAGE
    for kind, path in paths.items():
        print(f"fedray export: {kind} -> {path}")
    return 0


COMMANDS = {"run": _run, "validate": _validate, "export": _export}

if __name__ == "__main__":
    sys.exit(main())
