"""Runs as Ray jobs: submit through the Job Submission API, check, follow, list, stop.

A submitted run is `python -m fedray run CONFIG overrides...` executed on the
cluster with the local working directory uploaded (and the fedray package with
it). Before anything is uploaded the config is validated here and the cluster's
nodes are read from the dashboard, so a run the cluster can never place fails
in seconds instead of queueing forever.

Token authentication (Ray >= 2.52; on by default for `ray start --head` in
2.60): every request carries `Authorization: Bearer <token>`, the token found
where Ray itself looks: `RAY_AUTH_TOKEN`, the file named by
`RAY_AUTH_TOKEN_PATH`, then `~/.ray/auth_token`. The token is never put into
the job's runtime environment (job info is readable from the dashboard); the
job's driver inherits the cluster's own auth settings from the node it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

from fedray.cluster.errors import ClusterError
from fedray.cluster.resources import Node, run_demands, unplaceable, unplaceable_error
from fedray.config.schema import RunConfig

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info"]
_TOKEN_HINT = (
    "the cluster uses token authentication: put its token in ~/.ray/auth_token, or set "
    "RAY_AUTH_TOKEN (the token) or RAY_AUTH_TOKEN_PATH (a file holding it)"
)


@dataclasses.dataclass(frozen=True)
class SubmitOptions:
    """How runs travel to the cluster (the same for every run of a sweep)."""

    address: str
    """The dashboard's HTTP address, e.g. `http://HEAD:8265`."""
    working_dir: Path
    """Uploaded as the job's working directory; the config must lie inside it."""
    env_vars: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pip: Sequence[str] = ()
    """Extra pip requirements installed for the job (e.g. `-e .` is not possible remotely;
    name packages, or bake them into the cluster's image)."""
    python: str = "python"
    """The Python executable on the cluster's nodes."""


def dashboard_address(address: str | None) -> str:
    """`--address`, else `RAY_API_SERVER_ADDRESS` or an http `RAY_ADDRESS`, else the local default."""
    if not address:
        address = os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address and os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        address = os.environ["RAY_ADDRESS"]
    address = address or DEFAULT_ADDRESS
    address = address if "://" in address else f"http://{address}"
    return _checked_url(address)


def _checked_url(address: str) -> str:
    """`address` if it is an http(s) URL with a host and a numeric port (if any); else a
    ClusterError naming it (requests would raise InvalidURL from deep inside Ray)."""
    from urllib.parse import urlsplit

    try:
        split = urlsplit(address)
        ok = split.scheme in ("http", "https") and bool(split.hostname) and (split.port is None or split.port > 0)
    except ValueError:
        ok = False
    if not ok:
        raise ClusterError(f"--address {address}: not a Ray dashboard address; give http://HOST:PORT "
                           f"(e.g. {DEFAULT_ADDRESS})")
    return address


def auth_token() -> str | None:
    """The cluster token, looked up in Ray's order; None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named) if named else Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text().strip()
    except OSError:
        if named:  # Ray treats an unreadable RAY_AUTH_TOKEN_PATH as fatal; so do we
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named} cannot be read") from None
        return None
    return token or None


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer <token>` when a token exists, else nothing."""
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def connect(address: str) -> "JobSubmissionClient":
    """A Job Submission client for the dashboard at `address`, authenticated if a token exists."""
    from ray.job_submission import JobSubmissionClient

    with _dashboard(address):
        return JobSubmissionClient(address, headers=auth_headers())


def cluster_nodes(address: str) -> list[Node]:
    """The alive nodes' total resources and labels, read through the dashboard's State API."""
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    with _dashboard(address):
        client = StateApiClient(address, headers={"Content-Type": "application/json", **auth_headers()})
        nodes = client.list(StateResource.NODES, ListApiOptions(detail=True, limit=10_000), False)
    return [Node(n.resources_total, n.labels or {}, n.node_id) for n in nodes if n.state == "ALIVE"]


@contextlib.contextmanager
def _dashboard(address: str) -> Iterator[None]:
    """A refused token or an unreachable dashboard as one ClusterError naming the address."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        raise ClusterError(f"the Ray dashboard at {address} refused the request; {_TOKEN_HINT}") from None
    except ConnectionError as err:
        raise ClusterError(f"cannot reach the Ray dashboard at {address}: {err}") from None
    except ValueError as err:  # requests' InvalidURL and friends
        raise ClusterError(f"--address {address}: {err}") from None


def check_placeable(cfg: RunConfig, nodes: Sequence[Node], address: str) -> None:
    """Raise the ConfigError `fedray run` would raise, before anything is uploaded."""
    missing = unplaceable(run_demands(cfg), nodes)
    if missing:
        raise unplaceable_error(missing, f" at {address}")


def runtime_env(cfg: RunConfig, options: SubmitOptions) -> dict:
    """The job's runtime_env: working directory, fedray itself if it lives elsewhere, env vars."""
    import fedray

    working_dir = options.working_dir.resolve()
    excludes = list(_EXCLUDES)
    if "://" not in cfg.output_dir and not os.path.isabs(cfg.output_dir):
        excludes.append(cfg.output_dir)  # earlier local runs' outputs do not travel
    env_vars = {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_wait_s(cfg)), **options.env_vars}
    env: dict = {"working_dir": str(working_dir), "excludes": excludes, "env_vars": env_vars}
    package = Path(fedray.__file__).resolve().parent
    if not package.is_relative_to(working_dir):
        env["py_modules"] = [str(package)]
    if options.pip:
        env["pip"] = list(options.pip)
    return env


def stop_wait_s(cfg: RunConfig) -> int:
    """Seconds `ray job stop` waits after its SIGTERM before it kills the job (Ray's default
    is 3): enough for the round in progress to end (`server.round_timeout_s` bounds it) and
    the summary to be written. `--env RAY_JOB_STOP_WAIT_TIME_S=N` replaces it."""
    return int(cfg.server.round_timeout_s or 600) + 60


def entrypoint(config: str, overrides: Sequence[str], options: SubmitOptions) -> str:
    """`python -m fedray run CONFIG overrides...`, the config relative to the working directory."""
    relative = os.path.relpath(Path(config).resolve(), options.working_dir.resolve())
    if relative.startswith(".."):
        raise ClusterError(
            f"{config} is outside the working directory {options.working_dir}, which is what "
            "travels to the cluster; run from a directory that contains it or pass --working-dir"
        )
    return shlex.join([options.python, "-m", "fedray", "run", relative, *overrides])


def submit_run(
    client: "JobSubmissionClient",
    cfg: RunConfig,
    config: str,
    overrides: Sequence[str],
    options: SubmitOptions,
) -> str:
    """Submit one run as a Ray job; returns its submission id (`fedray-<name>-<hex>`)."""
    job_id = f"fedray-{cfg.name}-{secrets.token_hex(3)}"
    try:
        client.submit_job(
            entrypoint=entrypoint(config, overrides, options),
            submission_id=job_id,
            runtime_env=runtime_env(cfg, options),
            metadata={"fedray_name": cfg.name, "fedray_config": str(config), "fedray_output_dir": cfg.output_dir},
        )
    except RuntimeError as err:  # the Job SDK's answer for an HTTP error from the dashboard
        raise submit_refused(str(err), options.address) from None
    return job_id


def submit_refused(reason: str, address: str) -> ClusterError:
    """The dashboard refused a submission: one paragraph, with where to look when its job
    agent is not up (Ray says only "No available agent to submit job")."""
    first = (reason.strip().splitlines() or ["refused"])[-1].strip()
    if "No available agent" in reason:
        return ClusterError(
            f"the Ray dashboard at {address} has no job agent to run the job (\"{first}\"): the dashboard "
            "agent of the head node is not up; its reason is in the head node's "
            "/tmp/ray/session_latest/logs/dashboard_agent.log (wait a few seconds after `ray start`, or "
            "restart the cluster if the log shows it failed)")
    return ClusterError(f"the Ray dashboard at {address} refused the job: {first}")


def parse_env(items: Iterable[str]) -> dict[str, str]:
    """`--env NAME=VALUE`, or `--env NAME` to pass this shell's value on."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                raise ClusterError(f"--env {name}: not set in this environment")
            value = os.environ[name]
        env[name] = value
    return env


def follow_logs(client: "JobSubmissionClient", job_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's output until it ends; its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())
    return wait_for(client, [job_id])[job_id]


def wait_for(
    client: "JobSubmissionClient",
    job_ids: Sequence[str],
    on_done: Callable[[str, str], None] = lambda job_id, status: None,
    poll_s: float = 1.0,
) -> dict[str, str]:
    """Poll until every job is SUCCEEDED, FAILED or STOPPED; `on_done` as each one ends."""
    pending, done = list(job_ids), {}
    while pending:
        for job_id in list(pending):
            status = str(client.get_job_status(job_id).value)
            if status in TERMINAL:
                done[job_id] = status
                pending.remove(job_id)
                on_done(job_id, status)
        if pending:
            time.sleep(poll_s)
    return done
