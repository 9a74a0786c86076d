"""A federation on loopback: the server in this test's Ray, two sites each in a Ray of its own.

Each site is a `fedray site serve` process with its own temporary folder, state store
and Ray instance; the server reaches them over mutual TLS with the federation CA's
certificates. With the same seed, the federation's metrics equal the single-cluster
run's bit for bit, with SecAgg+ and client-level DP on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
import yaml

from fedray.config import load_config
from fedray.launcher import prepare, run
from fedray.sites import ca
from fedray.sites.wire import read_audit
from tests.conftest import REPO

SITES = {"site-a": [0, 2], "site-b": [1, 3]}
"""Client actor k hosts clients k and k + 2 (pool of 2): each site has one actor."""
EXPERIMENT = {
    "name": "fed", "seed": 3,
    "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5, "test_fraction": 0.2,
             "client_test_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [16]},
    "clients": {"num_clients": 4, "placement": "pool", "pool_size": 2, "resources": {"num_cpus": 1}},
    "train": {"local_epochs": 1, "batch_size": 32, "lr": 0.1},
    "server": {"rounds": 3, "clients_per_round": 4, "min_clients": 1, "round_timeout_s": 120,
               "checkpoint_every": 1,
               # SecAgg+ and client-level DP across sites: the server sees only the masked sum
               "secure_aggregation": {"name": "secagg_plus", "args": {"threshold": 2, "num_neighbours": 2,
                                                                      "bits": 32, "clip_range": 1.0,
                                                                      "max_weight": 2000}},
               "privacy": {"name": "fixed_clip", "args": {"clip_norm": 1.0, "noise_multiplier": 0.1}},
               # federated evaluation: each site's clients evaluate on their own held-out rows
               "evaluation": {"where": "both", "every": 1}},
}
HOLD = "tests.helpers:pause_when_marked"
TIMING = ("round_wall_s", "wall_s", "fed_eval_s")
"""Columns that measure wall time (they differ between any two runs)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_federation(root, sites=SITES, base=None, site_cpus: float = 2, allow_code=(), **extra) -> dict:
    """A CA, the server's and each site's certificate, the experiment YAML (`base`, default
    EXPERIMENT, with `extra` sections merged in), the site YAMLs."""
    pki = root / "ca"
    ca.init_ca(pki)
    ca.issue(pki, "server", "server", root / "server")
    ports = {name: _free_port() for name in sites}
    federation = {"sites": [{"name": n, "address": f"127.0.0.1:{ports[n]}", "clients": c} for n, c in sites.items()],
                  "tls": {"ca": str(pki / "ca.pem"), "cert": str(root / "server/server.pem"),
                          "key": str(root / "server/server.key")}, "connect_timeout_s": 60,
                  "reconnect_backoff_s": 0.1}
    experiment = {**(base or EXPERIMENT), "output_dir": str(root / "runs"), "federation": federation}
    for key, value in extra.items():
        experiment[key] = {**experiment.get(key, {}), **value}
    (root / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    configs = {}
    for name in sites:
        home = root / name
        ca.issue(pki, name, "site", home)
        site = {"name": name, "run": str(root / "experiment.yaml"), "listen": f"127.0.0.1:{ports[name]}",
                "tls": {"ca": str(pki / "ca.pem"), "cert": f"{home}/{name}.pem", "key": f"{home}/{name}.key"},
                "state_dir": str(home / "state"), "num_cpus": site_cpus,
                "allow_code": list(allow_code)}
        (home / "site.yaml").write_text(yaml.safe_dump(site))
        configs[name] = home / "site.yaml"
    return {"experiment": root / "experiment.yaml", "sites": configs, "root": root}


class SiteProcess:
    """One `fedray site serve` process; its output in `<site>/agent.log`."""

    def __init__(self, config):
        self.config, self.log = config, config.parent / "agent.log"
        self.start = self.log.stat().st_size if self.log.exists() else 0
        """Where this process's output begins in the log (a restarted agent appends to it)."""
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "fedray", "site", "serve", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def text(self) -> str:
        return self.log.read_bytes()[self.start:].decode() if self.log.exists() else ""

    def wait_for(self, words: str, limit_s: float = 120) -> None:
        """Until the agent's output says `words` (a state it reports, not a timer); fails if it exits."""
        deadline = time.monotonic() + limit_s
        while words not in self.text():
            assert self.proc.poll() is None, f"site agent exited ({self.proc.returncode}):\n{self.text()}"
            assert time.monotonic() < deadline, f"site agent never said {words!r}:\n{self.text()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def serving(federation):
    agents = {name: SiteProcess(path) for name, path in federation["sites"].items()}
    try:
        for agent in agents.values():
            agent.wait_for("serving clients")
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


def metrics(run_dir) -> list[dict]:
    """metrics.parquet's rows without wall times; NaN as a string (NaN != NaN)."""
    rows = pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()
    return [{k: "nan" if v != v else v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def sites(ray_cluster, tmp_path_factory):
    """Two site agents serving for the module's runs (the same experiment each time)."""
    root = tmp_path_factory.mktemp("federation")
    (root / "gate").mkdir()
    # a client transform that holds a marked client mid-round (identity otherwise), so a
    # site can be killed on a state; the sites agree to run it (`allow_code`)
    hold = {"name": "tests.helpers:pause_when_marked", "args": {"folder": str(root / "gate")}}
    federation = make_federation(root, allow_code=[HOLD], clients={"transforms": [hold]})
    with serving(federation) as agents:
        yield federation, agents


@pytest.fixture(scope="module")
def federation_run(sites):
    """The loopback federation's run, with what each agent said and every audit record."""
    federation, agents = sites
    summary = run(prepare(load_config(federation["experiment"])), console=lambda line: None)
    texts = {name: agent.text() for name, agent in agents.items()}
    audits = {name: read_audit(federation["root"] / name / "state" / "audit.jsonl") for name in SITES}
    audits["server"] = read_audit(f"{summary['run_dir']}/audit.jsonl")
    return federation, summary, texts, audits


def test_a_loopback_federation_equals_the_single_cluster_run_bit_for_bit(federation_run, tmp_path):
    federation, summary, _, _ = federation_run
    assert summary["status"] == "completed", summary
    single = load_config(federation["experiment"], [f"output_dir={tmp_path}", "federation.sites=[]"])
    reference = run(prepare(single), console=lambda line: None)
    assert reference["status"] == "completed"
    got, want = metrics(summary["run_dir"]), metrics(reference["run_dir"])
    assert len(got) == EXPERIMENT["server"]["rounds"]
    assert got == want
    assert all(row["dp_epsilon"] > 0 for row in got)  # client-level DP was on, across the sites
    evaluated = [column for column in got[0] if column.startswith("fed_")]
    assert evaluated and all(row["fed_global_accuracy"] >= 0 for row in got)  # the sites' clients evaluated


def test_each_site_hosts_its_own_clients_in_its_own_ray(federation_run):
    federation, summary, texts, _ = federation_run
    for name, clients in SITES.items():
        assert f"serving clients {clients}" in texts[name]
    placement = pq.read_table(f"{summary['run_dir']}/clients.parquet").to_pylist()
    assert len({row["node_id"] for row in placement}) == len(SITES)  # one Ray instance per site


def test_both_sides_audit_logs_agree_on_every_digest(federation_run):
    _, _, _, audits = federation_run
    server = audits["server"]
    for name in SITES:
        site = audits[name]
        sent = [(r["kind"], r["round"], r["bytes"], r["sha256"]) for r in server if r["peer"] == name
                and r["direction"] == "sent"]
        received = [(r["kind"], r["round"], r["bytes"], r["sha256"]) for r in site if r["direction"] == "received"]
        assert sent == received and sum(kind == "fit" for kind, *_ in sent) == EXPERIMENT["server"]["rounds"]
        assert any(kind == "stage" for kind, *_ in sent)  # SecAgg+'s stages went through the site
        up = [(r["kind"], r["sha256"]) for r in site if r["direction"] == "sent"]
        down = [(r["kind"], r["sha256"]) for r in server if r["peer"] == name and r["direction"] == "received"]
        rounds = EXPERIMENT["server"]["rounds"]
        assert up == down and sum(kind == "result" for kind, _ in up) == rounds * len(SITES[name])
        assert sum(kind == "evaluation" for kind, _ in up) == rounds * len(SITES[name])  # metrics only


def test_a_site_killed_mid_round_fails_its_clients_rejoins_and_the_run_completes(sites, tmp_path):
    """site-b's agent is killed (SIGKILL) while its client 1 is held inside round 2's fit:
    its clients fail that round (counted, not fatal); a new agent restores them from its
    store and they train again in round 3."""
    federation, agents = sites
    gate = federation["root"] / "gate"
    killed = threading.Event()

    def kill_when_held() -> None:
        while not (gate / "busy_r2_c1").exists():  # the state: client 1 is inside round 2
            time.sleep(0.05)
        agents["site-b"].proc.kill()
        agents["site-b"].proc.wait()
        killed.set()

    def console(line: str) -> None:
        if line.startswith("round 1/"):
            (gate / "go_r2_c1").touch()
            threading.Thread(target=kill_when_held, daemon=True).start()
        if line.startswith("round 2/"):  # before round 3: the site is back (a state, not a timer)
            assert killed.is_set()
            agents["site-b"] = SiteProcess(federation["sites"]["site-b"])
            agents["site-b"].wait_for("serving clients")

    cfg = load_config(federation["experiment"], [f"output_dir={tmp_path}"])
    summary = run(prepare(cfg), console=console)
    assert summary["status"] == "completed", summary
    rows = metrics(summary["run_dir"])
    log = open(f"{summary['run_dir']}/log.txt").read()
    for cid in SITES["site-b"]:  # failed, as data: the round went on
        assert f"client {cid} failed: site site-b: UNAVAILABLE" in log
    # Under SecAgg+ with 2 neighbours, losing site-b's two clients after the masks were set
    # up leaves client 0's self-mask with fewer than threshold=2 shares: the round's first
    # attempt cannot be unmasked and the second runs with the clients that can be reached,
    # as it would in one cluster (the log says so).
    assert (rows[1]["attempts"], rows[1]["clients_failed"]) == (2, 0)
    assert "round 2 attempt 1: only 1 share(s)" in log
    assert sorted(rows[1]["clients"]) == SITES["site-a"] and sorted(rows[2]["clients"]) == [0, 1, 2, 3]


def test_a_restarted_server_resumes_from_its_checkpoint_and_the_sites_stores(sites, federation_run, tmp_path):
    """The server actor is killed after round 1: the driver restarts it from its checkpoint,
    it reconnects to the sites, whose clients still hold their state, and the run ends with
    the uninterrupted federation's metrics."""
    import ray

    from fedray.driver import run_key

    federation, _ = sites
    _, reference, _, _ = federation_run
    lines: list[str] = []
    run_dir = tmp_path / "fed"

    def kill_server_after_round_1(line: str) -> None:
        lines.append(line)
        if line.startswith("round 1/"):
            ray.kill(ray.get_actor(f"fedray/{run_key(run_dir)}/0/server"))

    cfg = load_config(federation["experiment"], [f"output_dir={tmp_path}"])
    summary = run(prepare(cfg), console=kill_server_after_round_1)
    assert summary["status"] == "completed", summary
    assert any("resuming after round 1" in line for line in lines)
    assert metrics(summary["run_dir"]) == metrics(reference["run_dir"])
