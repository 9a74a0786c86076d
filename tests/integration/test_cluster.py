"""A real two-node Ray cluster on loopback: `fedray submit`, pinned clients, failing fast, stop,
a pinned client reading its site's files on its own node.

The head (label silo=b) and a second node (custom resource silo_a) are started
with `ray start --block` in their own sessions, so tearing them down kills
exactly their processes (never `ray stop`, which would end every Ray on the
machine). Both run with RAY_AUTH_MODE=token, as a real cluster would; the
`fedray` commands run without it and must authenticate on their own.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fedray.cli.main import main
from fedray.cluster.submit import cluster_nodes
from tests.conftest import REPO

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(session_ids: set[int]) -> list[int]:
    """Pids of live processes whose session is one of ours (Ray's workers change
    process group but keep the session of the `ray start` that launched them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in session_ids:
            found.append(int(entry.name))
    return found


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each `ray start --block` (it stops its node), then SIGKILL leftovers."""
    sessions = {p.pid for p in procs}
    for proc in reversed(procs):
        proc.terminate()
    deadline = time.monotonic() + 20
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while session_processes(sessions) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in session_processes(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def fedray(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process, without RAY_AUTH_MODE in its environment (it finds
    the cluster's token where a user's shell would: RAY_AUTH_TOKEN_PATH, set by `two_nodes`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, "-m", "fedray", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_nodes():
    temp = Path(tempfile.mkdtemp(prefix="fr-", dir="/tmp"))  # short: Ray's socket paths are limited
    # The cluster's own token, as an operator would provision it: `ray start` with
    # RAY_AUTH_MODE=token refuses to start without one (a fresh machine has no
    # ~/.ray/auth_token), and every client of the cluster reads it from this path.
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    saved_token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)  # in-process `main(...)` calls and subprocesses
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}:{env['PATH']}", PYTHONPATH=REPO)
    gcs, dashboard = free_port(), free_port()
    address = f"http://127.0.0.1:{dashboard}"
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []

    site_a = temp / "site_a"
    site_a.mkdir()

    def start(name: str, *args: str, node_env: dict | None = None) -> None:
        log = open(temp / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(subprocess.Popen(
            [RAY, "start", *common, f"--temp-dir={temp / name}", f"--dashboard-agent-listen-port={free_port()}",
             *args], env={**env, **(node_env or {})}, start_new_session=True, stdout=log, stderr=subprocess.STDOUT))

    def wait_for_nodes(count: int) -> list:
        deadline, last = time.monotonic() + 600, None  # a hang guard: a loaded machine takes minutes
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), (temp / "head.log").read_text()[-3000:]
            try:
                nodes = cluster_nodes(address)
                if len(nodes) == count:
                    return nodes
            except Exception as err:  # noqa: BLE001 - the dashboard is still starting
                last = err
            time.sleep(1)
        raise TimeoutError(f"{count} node(s) not up after 90 s; last error: {last!r}")

    try:
        started = time.perf_counter()
        start("head", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
              f"--ray-client-server-port={free_port()}", "--labels=silo=b")
        wait_for_nodes(1)
        # only silo A's processes can name its data folder: $FEDRAY_SITE_A is set on that node alone
        start("worker", f"--address=127.0.0.1:{gcs}", '--resources={"silo_a": 2}',
              node_env={"FEDRAY_SITE_A": str(site_a)})
        nodes = wait_for_nodes(2)
        print(f"two-node cluster up in {time.perf_counter() - started:.1f} s")
        yield {
            "address": address,
            "silo_a": next(n.node_id for n in nodes if "silo_a" in n.resources),
            "silo_b": next(n.node_id for n in nodes if n.labels.get("silo") == "b"),
            "site_a": site_a,
        }
    finally:
        stop_nodes(procs)
        if saved_token_path is None:
            os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        else:
            os.environ["RAY_AUTH_TOKEN_PATH"] = saved_token_path
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_runs_to_success_with_clients_on_their_silos(two_nodes, tmp_path, capsys):
    proc = fedray(
        "submit", "configs/cross_silo.yaml", f"output_dir={tmp_path}", "server.rounds=2",
        "train.local_epochs=1", "server.foundation_model.model.name=mlp", "server.foundation_model.num_workers=2", "server.foundation_model.placement_strategy=STRICT_SPREAD",
        "server.foundation_model.resources.num_cpus=0.25", "--address", two_nodes["address"],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    job_id = proc.stdout.split("submitted job ")[1].split()[0]
    assert f"job {job_id} SUCCEEDED" in proc.stdout
    assert "round 2/2 | clients 4/4" in proc.stdout  # the run's own output, followed

    run_dir = tmp_path / "cross_silo"
    assert {"config.yaml", "metrics.parquet", "clients.parquet", "summary.json", "checkpoints"} <= {
        p.name for p in run_dir.iterdir()}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert [r["round"] for r in pq.read_table(run_dir / "metrics.parquet").to_pylist()] == [1, 2]

    node_of = {r["client_id"]: r["node_id"] for r in pq.read_table(run_dir / "clients.parquet").to_pylist()}
    assert node_of[0] == node_of[1] == two_nodes["silo_a"]  # pinned by the custom resource
    assert node_of[2] == node_of[3] == two_nodes["silo_b"]  # pinned by the node label
    # STRICT_SPREAD: one worker bundle on each node
    assert sorted(summary["placement"]["worker_nodes"]) == sorted([two_nodes["silo_a"], two_nodes["silo_b"]])

    assert main(["jobs", "--address", two_nodes["address"]]) == 0
    listing = capsys.readouterr().out
    assert job_id in listing and "SUCCEEDED" in listing and "cross_silo" in listing
    assert main(["logs", job_id, "--address", two_nodes["address"]]) == 0
    assert "fedray: completed 2 round(s)" in capsys.readouterr().out


def test_pinned_clients_read_their_site_files_on_their_own_node(two_nodes, tmp_path):
    """Clients 0 and 1 run on silo A's node and read `$FEDRAY_SITE_A`, a variable only that
    node has: neither the driver (a job on the head) nor the server could even name the
    folder. Each client reports the node it ran on and a digest of what it read."""
    from fedray.data.plan import content_digest
    from tests.unit.data.test_images import tiny_idx

    assert "FEDRAY_SITE_A" not in os.environ
    tiny_idx(two_nodes["site_a"], train=12, test=2)
    for folder in ("server", "site_b"):
        (tmp_path / folder).mkdir()
        tiny_idx(tmp_path / folder, train=12, test=4)
    proc = fedray(
        "submit", "configs/cross_silo.yaml", f"output_dir={tmp_path}", "server.rounds=1", "train.local_epochs=1",
        "data.dataset=idx", "data.partition=iid", f"data.path={tmp_path / 'server'}",
        f"data.sites=[{{clients: [0, 1], path: $FEDRAY_SITE_A}}, {{clients: [2, 3], path: {tmp_path / 'site_b'}}}]",
        "--address", two_nodes["address"],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "round 1/1 | clients 4/4" in proc.stdout
    clients = {r["client_id"]: r for r in pq.read_table(tmp_path / "cross_silo" / "clients.parquet").to_pylist()}
    site_a = f"{two_nodes['site_a']} sha256:{content_digest(two_nodes['site_a'])}"
    assert [clients[c]["node_id"] for c in (0, 1)] == [two_nodes["silo_a"]] * 2
    assert [clients[c]["data_source"] for c in (0, 1)] == [site_a] * 2
    site_b = f"{tmp_path / 'site_b'} sha256:{content_digest(tmp_path / 'site_b')}"
    assert [clients[c]["data_source"] for c in (2, 3)] == [site_b] * 2


def test_resources_the_cluster_never_has_fail_in_seconds_naming_them(two_nodes, tmp_path):
    proc = fedray("submit", "configs/cross_silo.yaml", f"output_dir={tmp_path}", "server.resources.custom.silo_z=1",
                  "clients.pinned=[{clients: [0, 1], resources: {num_gpus: 1}}]", "--address", two_nodes["address"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the Ray cluster at {two_nodes['address']} can never place these actors" in proc.stderr
    assert "server actor needs {silo_z: 1}; no node offers 'silo_z'" in proc.stderr
    assert "client actor 0 needs {CPU: 1, GPU: 1}; no node offers 'GPU'" in proc.stderr
    assert "client actor 1 needs" in proc.stderr and "Traceback" not in proc.stderr
    assert "submitted" not in proc.stdout  # refused before any upload, so before any wait on the cluster


def logs_once(address: str, job_id: str, pattern: str) -> str:
    """The job's log once it matches `pattern` (waits for that state; fails if the job ends first)."""
    return first_to_log(address, [job_id], pattern)[1]


def first_to_log(address: str, job_ids: list[str], pattern: str) -> tuple[str, str]:
    """(job id, its log) of the first of `job_ids` whose log matches `pattern` (waits for
    that state; fails if one of them ends first)."""
    from fedray.cluster.submit import connect

    client = connect(address)
    deadline = time.monotonic() + 900  # only so that a broken run cannot hang the suite (2 loaded cores: minutes)
    while time.monotonic() < deadline:
        for job_id in job_ids:
            text = client.get_job_logs(job_id)
            if re.search(pattern, text):
                return job_id, text
            assert str(client.get_job_status(job_id).value) in ("PENDING", "RUNNING"), text[-3000:]
        time.sleep(1)
    raise TimeoutError(f"jobs {job_ids}: no {pattern!r} in any log")


def test_a_sweep_submits_one_job_per_combination_and_jobs_can_be_stopped(two_nodes, tmp_path, capsys):
    """Completion of a submitted run is shown above; here the sweep's fan-out and `fedray stop`,
    which stops each run like Ctrl-C: after its round in progress, summary and checkpoints kept."""
    address = two_nodes["address"]
    assert main(["sweep", f"{REPO}/configs/cross_silo.yaml", f"output_dir={tmp_path}", "server.rounds=100000",
                 "server.checkpoint_every=1", "--grid", "train.lr=0.05,0.2", "--no-wait", "--working-dir", REPO,
                 "--address", address]) == 0
    out = capsys.readouterr().out
    job_ids = [line.split()[1] for line in out.splitlines() if line.strip().startswith("submitted ")]
    assert len(job_ids) == 2 and "(cross_silo-lr=0.05)" in out and "(cross_silo-lr=0.2)" in out
    assert main(["jobs", "--address", address]) == 0
    listing = capsys.readouterr().out
    assert all(job_id in listing for job_id in job_ids)
    # Both runs need both of silo A's slots, so one waits for the other: stop whichever
    # is running first, then the other once it has started in the freed slots.
    remaining = dict(zip(job_ids, ["cross_silo-lr=0.05", "cross_silo-lr=0.2"]))
    while remaining:
        job_id, _ = first_to_log(address, list(remaining), r"round +2/100000 ")
        name = remaining.pop(job_id)
        assert main(["stop", job_id, "--address", address]) == 0
        assert f"job {job_id} STOPPED" in capsys.readouterr().out
        text = logs_once(address, job_id, r"fedray: terminated \(SIGTERM\)")
        assert "SIGTERM received" not in text and "Traceback" not in text
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["rounds_completed"] >= 2
        assert (tmp_path / name / "checkpoints" / f"round_{summary['rounds_completed']:06d}.safetensors").is_file()
    assert main(["logs", "fedray-no-such-job", "--address", address]) == 2
    assert "fedray logs: job fedray-no-such-job: " in capsys.readouterr().err
