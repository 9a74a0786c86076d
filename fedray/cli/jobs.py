"""`fedray submit | jobs | logs | stop | sweep`: runs as Ray jobs on a cluster, and grids of runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from fedray.cluster.errors import ClusterError


def add_submit_options(parser: argparse.ArgumentParser, address_help: str) -> None:
    """Options shared by `submit` and `sweep`: where and how runs travel."""
    parser.add_argument("--address", help=address_help)
    parser.add_argument("--no-wait", action="store_true", help="return after submitting")
    parser.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (default .)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="environment variable for the job; NAME alone passes this shell's value")
    parser.add_argument("--pip", action="append", default=[], metavar="REQ", help="pip requirement for the job")
    parser.add_argument("--python", default="python", help="Python executable on the cluster (default python)")
    parser.add_argument("--skip-local-checks", action="store_true",
                        help="do not build the data and model locally first (data only on the cluster)")


def add_address(parser: argparse.ArgumentParser) -> None:
    """The `--address` option of `jobs`, `logs` and `stop`."""
    parser.add_argument("--address", help="Ray dashboard, e.g. http://HEAD:8265 "
                        "(default: RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, or http://127.0.0.1:8265)")


def submit(args: argparse.Namespace) -> int:
    """`fedray submit`: check, submit one run, follow its log unless --no-wait."""
    from fedray.cluster import submit as jobs

    from fedray.config.load import load_config

    cfg = load_config(args.config, args.overrides)
    options = _options(args)
    client = jobs.connect(options.address)
    if cfg.ray.check_resources:  # first: it needs no data, so it fails in about a second
        jobs.check_placeable(cfg, jobs.cluster_nodes(options.address), options.address)
    _check_locally(cfg, args)
    _warn_if_relative(cfg.output_dir)
    job_id = jobs.submit_run(client, cfg, args.config, args.overrides, options)
    print(f"fedray: submitted job {job_id} to {options.address}", flush=True)
    if args.no_wait:
        print(f"fedray: follow it with `fedray logs {job_id} --follow --address {options.address}`")
        return 0
    try:
        with _about(job_id):
            status = jobs.follow_logs(client, job_id, lambda text: print(text, end="", flush=True))
    except KeyboardInterrupt:
        print(f"\nfedray: stopped following; job {job_id} keeps running (`fedray stop {job_id}`)")
        return 130
    print(f"fedray: job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def list_jobs(args: argparse.Namespace) -> int:
    """`fedray jobs`: the cluster's fedray jobs (all jobs with --all)."""
    from fedray.cluster import submit as jobs

    address = jobs.dashboard_address(args.address)
    found = sorted(jobs.connect(address).list_jobs(), key=lambda j: j.start_time or 0)
    rows = [("JOB", "STATUS", "RUN", "STARTED", "ENTRYPOINT")]
    for job in found:
        name = (job.metadata or {}).get("fedray_name")
        if name is None and not args.all:
            continue
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000))
        job_id = job.submission_id or job.job_id or "-"
        rows.append((job_id, str(job.status.value), name or "-", started, job.entrypoint))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    return 0


def logs(args: argparse.Namespace) -> int:
    """`fedray logs JOB [--follow]`."""
    from fedray.cluster import submit as jobs

    client = jobs.connect(jobs.dashboard_address(args.address))
    with _about(args.job):
        if not args.follow:
            print(client.get_job_logs(args.job), end="")
            return 0
        status = jobs.follow_logs(client, args.job, lambda text: print(text, end="", flush=True))
    print(f"fedray: job {args.job} {status}")
    return 0


def stop(args: argparse.Namespace) -> int:
    """`fedray stop JOB`: stop it and wait until Ray says STOPPED."""
    from fedray.cluster import submit as jobs

    client = jobs.connect(jobs.dashboard_address(args.address))
    with _about(args.job):
        if not client.stop_job(args.job):
            print(f"fedray: job {args.job} had already ended ({client.get_job_status(args.job).value})")
            return 0
        status = jobs.wait_for(client, [args.job], poll_s=0.5)[args.job]
    print(f"fedray: job {args.job} {status}")
    return 0


def sweep(args: argparse.Namespace) -> int:
    """`fedray sweep`: every grid combination, locally in turn or as jobs with --address."""
    from fedray.experiments.sweep import plan_sweep, run_local

    runs = plan_sweep(args.config, args.overrides, args.grid)
    print(f"fedray: sweep of {len(runs)} run(s): " + ", ".join(r.name for r in runs), flush=True)
    if args.address:
        return _sweep_on_cluster(args, runs)
    summaries = run_local(runs, verbose=args.verbose, reuse=not args.no_reuse)
    for run, summary in zip(runs, summaries):
        print(f"  {summary['status']:<10} {run.name}  {summary.get('run_dir', summary.get('error', ''))}")
    done = [s["run_dir"] for s in summaries if "run_dir" in s]
    if done:
        print("fedray: compare them with `fedray report " + " ".join(done) + "`")
    return 0 if all(s["status"] == "completed" for s in summaries) else 1


def _sweep_on_cluster(args: argparse.Namespace, runs) -> int:
    from fedray.cluster import submit as jobs

    options = _options(args)
    client = jobs.connect(options.address)
    nodes = jobs.cluster_nodes(options.address)
    for run in runs:
        if run.cfg.ray.check_resources:
            jobs.check_placeable(run.cfg, nodes, options.address)
    for run in runs:
        _check_locally(run.cfg, args)
    _warn_if_relative(runs[0].cfg.output_dir)
    ids = [jobs.submit_run(client, r.cfg, args.config, [*args.overrides, *r.overrides], options) for r in runs]
    for run, job_id in zip(runs, ids):
        print(f"  submitted {job_id}  ({run.name})", flush=True)
    if args.no_wait:
        return 0
    done = jobs.wait_for(client, ids, lambda job_id, status: print(f"  {status:<10} {job_id}", flush=True))
    return 0 if all(s == "SUCCEEDED" for s in done.values()) else 1


@contextlib.contextmanager
def _about(job_id: str) -> Iterator[None]:
    """The Job SDK raises RuntimeError for an unknown job or a lost log stream: say which job."""
    try:
        yield
    except RuntimeError as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ClusterError(f"job {job_id}: {reason}") from None


def _check_locally(cfg, args: argparse.Namespace) -> None:
    """Build data and model as `fedray run` would, before anything travels."""
    from fedray.launcher import prepare

    if not args.skip_local_checks:
        prepare(cfg, args.config, local=False)


def _options(args: argparse.Namespace):
    from fedray.cluster.submit import SubmitOptions, dashboard_address, parse_env

    return SubmitOptions(
        address=dashboard_address(args.address),
        working_dir=Path(args.working_dir),
        env_vars=parse_env(args.env),
        pip=tuple(args.pip),
        python=args.python,
    )


def _warn_if_relative(output_dir: str) -> None:
    if "://" not in output_dir and not os.path.isabs(output_dir):
        print(
            f"fedray: note: output_dir '{output_dir}' is relative, so run directories land in the job's "
            "copy of the working directory on the node its driver runs on; give shared storage "
            "(an absolute path every node mounts, or a URI such as s3://bucket/runs)",
            file=sys.stderr,
        )

