"""`fedray run | validate | export | submit | jobs | logs | stop | sweep | report | compare | unlearn |
watermark | generate | show-granules | site | ca`: the command line.

User mistakes (bad config, missing or damaged files, resources the cluster
lacks, an unreachable or refusing cluster) print one clear paragraph to stderr
and exit with status 2, without a traceback. Ctrl-C exits with 130 and SIGTERM
with 143, both after the round in progress, with checkpoints kept.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Sequence

from fedray.cli import generate, jobs, sites, unlearn, watermark
from fedray.cli.trust import add_allow_code
from fedray.cluster.errors import ClusterError
from fedray.config.errors import ConfigError
from fedray.signals import EXIT_TERMINATED, Terminated, forget_signals, sigterm_as_interrupt, sigterm_received
from fedray.server.serialize import CheckpointError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedray", description="Federated learning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a federated experiment from a YAML config")
    run.add_argument("config", nargs="?", help="YAML config file (not with --resume)")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. server.rounds=5")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue RUN_DIR from its newest checkpoint, with its config; overrides "
                          "may change only what a resume allows (docs/guides/reliability.md)")
    run.add_argument("--fresh", action="store_true",
                     help="with --resume: if RUN_DIR has no checkpoint to continue from, start it "
                          "again from round 1 (its metrics are replaced)")
    run.add_argument("--verbose", action="store_true",
                     help="also print Ray's own log lines and the workers' output (always in log.txt)")
    add_allow_code(run)

    validate = sub.add_parser("validate", help="check a config and print it resolved")
    validate.add_argument("config", help="YAML config file")
    validate.add_argument("overrides", nargs="*", help="key=value overrides")

    export = sub.add_parser("export", help="write a LoRA run's global adapter in PEFT format, or with "
                                           "--client N a personalised run's model and client N's personal part")
    export.add_argument("run_dir", help="run directory (holds config.yaml and checkpoints/)")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--merged", action="store_true", help="also write the merged model")
    export.add_argument("--client", type=int, default=None, metavar="N",
                        help="a personalised run: write the global model and client N's personal tensors "
                             "(read from its client store) as safetensors")
    add_allow_code(export)

    submit = sub.add_parser("submit", help="run a config as a Ray job on a cluster")
    submit.add_argument("config", help="YAML config file, inside the working directory")
    submit.add_argument("overrides", nargs="*", help="key=value overrides")
    jobs.add_submit_options(submit, "Ray dashboard, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, "
                            "an http RAY_ADDRESS, or http://127.0.0.1:8265)")

    listing = sub.add_parser("jobs", help="list the cluster's fedray jobs")
    jobs.add_address(listing)
    listing.add_argument("--all", action="store_true", help="also jobs not submitted by fedray")

    logs = sub.add_parser("logs", help="print a job's output")
    logs.add_argument("job", help="job id, as printed by fedray submit")
    jobs.add_address(logs)
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")

    stop = sub.add_parser("stop", help="stop a job")
    stop.add_argument("job", help="job id")
    jobs.add_address(stop)

    sweep = sub.add_parser("sweep", help="run every combination of a grid of config values")
    sweep.add_argument("config", help="YAML config file (its sweep.grid section is used too)")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="values of one key; repeat for more keys")
    jobs.add_submit_options(sweep, "submit every run as a job to this Ray dashboard instead of running locally")
    sweep.add_argument("--verbose", action="store_true",
                       help="also print Ray's own log lines and the workers' output (always in log.txt)")
    sweep.add_argument("--no-reuse", action="store_true",
                       help="start fresh client actors for every run (default: take over the last run's)")

    report = sub.add_parser("report", help="plots and a Markdown table comparing run directories")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (paths or URIs)")
    report.add_argument("--out", default="report", help="folder for the PNGs and report.md (default report)")

    granules = sub.add_parser("show-granules", help="draw images of a few clients with their granular balls")
    granules.add_argument("config", metavar="CONFIG_OR_RUN_DIR", help="YAML config, or a run directory")
    granules.add_argument("overrides", nargs="*", help="key=value overrides")
    granules.add_argument("--out", default="granules.png",
                          help="PNG to write, or a folder to write granules.png into (default granules.png)")
    add_allow_code(granules)

    compare = sub.add_parser("compare", help="time-to-accuracy of finished runs, side by side")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument("--target", type=_accuracy, default=0.85,
                         help="accuracy to reach, in [0, 1] (default 0.85)")
    unlearn.add_parser(sub)
    watermark.add_parser(sub)
    generate.add_parser(sub)
    sites.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `fedray submit c.yaml a=1 --address X b=2`: overrides after an option are overrides too
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Dotted paths in configs (`package.module:attr`) resolve from the working
    # directory, as under `python -m`; Ray passes the driver's path on to workers.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    forget_signals()
    try:
        with sigterm_as_interrupt():
            return COMMANDS[args.command](args)
    except (ConfigError, ClusterError, CheckpointError) as err:
        print(f"fedray {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated) or sigterm_received()
        how = "terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)"
        print(f"fedray: {how}; completed rounds and checkpoints are kept", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _accuracy(text: str) -> float:
    """An accuracy target for argparse: a number in [0, 1] (NaN would never be reached)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be an accuracy in [0, 1], got {text!r}")
    return value


def _run(args: argparse.Namespace) -> int:
    from fedray.config.load import load_config
    from fedray.launcher import RayLogs, RayStart, prepare, run
    from fedray.server.resume import already_completed, current_config, resume_config

    config, overrides = args.config, list(args.overrides)
    if args.resume:
        if config is not None and "=" in config:  # `run --resume DIR key=value`
            overrides.insert(0, config)
        elif config is not None:
            raise ConfigError([f"give either CONFIG ({config}) or --resume, not both"], "command line")
        cfg = resume_config(args.resume, overrides, args.allow_code)  # refuses what a resume may not change
        config = str(current_config(args.resume)[0])
        done = already_completed(args.resume, cfg)
        if done is not None:  # nothing to run: no Ray, no actors
            print(f"fedray: {args.resume} already completed its server.rounds={done} rounds; nothing to run "
                  f"(`fedray run --resume {args.resume} server.rounds=N` with N > {done} goes on)")
            return 0
    elif config is None:
        raise ConfigError(["fedray run needs a CONFIG file (or --resume RUN_DIR)"], "command line")
    elif args.fresh or args.allow_code:
        raise ConfigError([f"{'--fresh' if args.fresh else '--allow-code'} goes with --resume RUN_DIR (a config "
                           "given on the command line may name code as it is)"], "command line")
    else:
        cfg = load_config(config, overrides)
    began = time.perf_counter() - _process_age_s()
    started: list = []  # Ray starts once the config checks out, while the data is built
    with RayLogs(args.verbose) as logs:
        try:
            # not kept in a variable here, so the driver alone holds the data and can drop it
            summary = run(prepare(cfg, config, on_checked=lambda: started.append(RayStart(cfg))),
                          resume=args.resume, fresh=args.fresh, start=started[0] if started else None,
                          logs=logs, began=began)
        finally:
            for start in started:
                start.stop()  # after an error before the run took it over; else a no-op
    print(format_summary(summary))
    return 0 if summary["status"] == "completed" else 1


def _process_age_s() -> float:
    """Seconds since this process started (so start-up counts Python's own imports too)."""
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())


def format_summary(summary: dict) -> str:
    """The run's last line: status, rounds, time, final metrics (if any round was evaluated), where."""
    final = summary.get("final_metrics", {})
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k != "round")
    clients = summary.get("clients_final_metrics", {})
    if clients:  # federated evaluation: the clients' mean and worst-served tail
        metrics = ", ".join([m for m in (metrics,) if m] + [
            f"clients' accuracy {clients['global_accuracy']:.4f} (worst 10% {clients['global_accuracy_worst10']:.4f})"])
    metrics = metrics or "no evaluated round"
    return (f"fedray: {summary['status']} {summary['rounds_completed']} round(s) in "
            f"{summary['wall_s']:.1f} s; {metrics}; results in {summary['run_dir']}")


def _validate(args: argparse.Namespace) -> int:
    from fedray.config.load import load_config, to_yaml
    from fedray.launcher import prepare

    cfg = load_config(args.config, args.overrides)
    prepared = prepare(cfg, args.config)
    print(to_yaml(cfg), end="")
    plan = prepared.dataset
    train = f"{len(plan.sites)} site(s)' training" if plan.sites else f"{len(plan.rows)} training"
    print(
        f"# ok: {plan.num_clients} clients, {train} / {len(plan.test_rows)} test "
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


def _report(args: argparse.Namespace) -> int:
    from fedray.experiments.report import load_runs, write_report

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError([f"--out {args.out} exists and is not a directory; name a folder for the report"],
                          "command line")
    try:
        records = load_runs(args.run_dirs)
    except ValueError as err:
        print(f"fedray report: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = write_report(records, args.out)
    except OSError as err:
        raise ConfigError([f"--out {args.out}: cannot write the report there: {err}"], "command line") from None
    print(result.table, end="")
    print(f"fedray: report in {args.out}/: " + ", ".join(f.name for f in result.files))
    return 0


def _export(args: argparse.Namespace) -> int:
    from fedray.server.export import export_run
    from fedray.server.personal_export import export_client

    try:
        if args.client is not None:
            paths = export_client(args.run_dir, args.out, args.client, allow_code=args.allow_code)
        else:
            paths = export_run(args.run_dir, args.out, merged=args.merged, allow_code=args.allow_code)
    except (ValueError, OSError) as err:
        print(f"fedray export: {err}", file=sys.stderr)
        return EXIT_USAGE
    for kind, path in paths.items():
        print(f"fedray export: {kind} -> {path}")
    return 0


def _show_granules(args: argparse.Namespace) -> int:
    from fedray.config.load import load_config, load_run_config
    from fedray.data.federated import build_federated_dataset
    import numpy as np

    from fedray.data.granular.figure import show_granules
    from fedray.models.graph_task import granular_cache_dir

    if os.path.isdir(args.config):  # a run directory's config: code in it only if allowed
        path = os.path.join(args.config, "config.yaml")
        cfg = load_run_config(path, args.allow_code, args.overrides)
    else:
        path, cfg = args.config, load_config(args.config, args.overrides)
    if os.path.isdir(args.out) or args.out.endswith(("/", os.sep)):  # a folder: the default name inside it
        os.makedirs(args.out, exist_ok=True)
        args.out = os.path.join(args.out, "granules.png")
    try:
        dataset = build_federated_dataset(cfg.data, cfg.clients.num_clients, cfg.seed)
        figure = show_granules(dataset, cfg.data.granular, args.out, granular_cache_dir(cfg))
    except (ValueError, OSError) as err:
        raise ConfigError([f"data: {err}"], path) from None
    counts = figure.nodes_per_image
    print(f"fedray: {args.out}: clients {list(figure.clients)}, {len(counts)} images, balls per image "
          f"median {np.median(counts):.0f} (min {counts.min()}, max {counts.max()}) of "
          f"{figure.pixels_per_image} pixels")
    return 0


COMMANDS = {
    "run": _run,
    "validate": _validate,
    "export": _export,
    "submit": jobs.submit,
    "jobs": jobs.list_jobs,
    "logs": jobs.logs,
    "stop": jobs.stop,
    "sweep": jobs.sweep,
    "report": _report,
    "compare": _compare,
    "unlearn": unlearn.command,
    "watermark": watermark.main,
    "site": sites.site_command,
    "ca": sites.ca_command,
    "generate": generate.main,
    "show-granules": _show_granules,
}

if __name__ == "__main__":
    sys.exit(main())
