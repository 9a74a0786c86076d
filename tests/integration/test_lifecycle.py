"""A client's rights and worth on a real local Ray: the update ledger, contribution values and
payouts, and unlearning a backdoored client with `fedray unlearn` (retrain and FedEraser)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.cli.main import main
from fedray.config import load_config
from fedray.launcher import prepare, run
from fedray.lifecycle.backdoor import Probe
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import REPO
from tests.helpers import untimed

# four clients, all in every round, client 3 poisons half its shard with a trigger
BACKDOOR = [
    "clients.num_clients=4", "server.clients_per_round=4", "server.rounds=5", "clients.pool_size=2",
    "clients.resources.num_cpus=1", "server.keep_checkpoints=10", "server.contribution.budget=100",
]


def backdoor_config(where, *overrides):
    return load_config(f"{REPO}/configs/unlearning.yaml", [f"output_dir={where}", *BACKDOOR, *overrides])


def run_quiet(cfg):
    return run(prepare(cfg), console=lambda line: None)


def rows(run_dir, name="metrics.parquet"):
    return pq.read_table(Path(run_dir) / name).to_pylist()


def final_params(run_dir):
    return load_checkpoint(latest_checkpoint(Path(run_dir) / "checkpoints")).params


def fingerprint(folder):
    """Every file under `folder` with its content hash: to prove it was not modified."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(ray_cluster, tmp_path_factory):
    """The backdoored run (ledger every round, GTG-Shapley), and its probe."""
    where = tmp_path_factory.mktemp("lifecycle")
    cfg = backdoor_config(where)
    summary = run_quiet(cfg)
    assert summary["status"] == "completed"
    prepared = prepare(cfg)
    return Path(summary["run_dir"]), Probe(cfg, prepared.dataset.info, prepared.dataset.test)


def test_ledger_contributions_and_payouts_are_recorded(source):
    run_dir, _ = source
    metrics = rows(run_dir)
    assert sorted(p.name for p in (run_dir / "ledger").iterdir()) == [f"round_00000{r}.parquet" for r in range(1, 6)]
    ledger_size = sum(p.stat().st_size for p in (run_dir / "ledger").iterdir())
    assert metrics[-1]["ledger_bytes"] == ledger_size
    assert all(a["ledger_bytes"] < b["ledger_bytes"] for a, b in zip(metrics, metrics[1:]))

    values = rows(run_dir, "contributions.parquet")
    assert len(values) == 5 * 4
    for r in range(1, 6):
        this = [v for v in values if v["round"] == r]
        assert sorted(v["client_id"] for v in this) == [0, 1, 2, 3]
        gain = this[0]["utility_after"] - this[0]["utility_before"]
        assert sum(v["value"] for v in this) == pytest.approx(gain, abs=1e-3)  # GTG's epsilon
    clients = pq.read_table(run_dir / "clients.parquet").to_pydict()
    cumulative = [sum(v["value"] for v in values if v["client_id"] == c) for c in range(4)]
    np.testing.assert_allclose(clients["contribution"], cumulative)
    assert clients["rounds_valued"] == [5] * 4
    assert sum(clients["payout"]) == pytest.approx(100.0)
    # the backdoored client trains half its shard towards the wrong label: worth least, paid least
    assert np.argmin(cumulative) == 3 and np.argmin(clients["payout"]) == 3


def test_unlearning_removes_the_backdoor(source, tmp_path):
    run_dir, probe = source
    before = fingerprint(run_dir)
    never = run_quiet(backdoor_config(tmp_path / "never", "clients.excluded=[3]"))
    reference = probe.metrics(final_params(never["run_dir"]))
    poisoned = probe.metrics(final_params(run_dir))
    assert poisoned["backdoor_success"] > 0.3 > reference["backdoor_success"] + 0.2

    for method in ("retrain", "federaser"):
        assert main(["unlearn", str(run_dir), "--clients", "3", "--method", method,
                     f"name={method}", f"output_dir={tmp_path}"]) == 0
        unlearned = tmp_path / method
        after = probe.metrics(final_params(unlearned))
        assert after["backdoor_success"] <= reference["backdoor_success"] + 0.05, method
        assert abs(after["accuracy"] - reference["accuracy"]) <= 0.02, method
        section = json.loads((unlearned / "summary.json").read_text())["unlearning"]
        assert section["clients"] == [3] and section["after"]["accuracy"] == pytest.approx(after["accuracy"])
        assert all(3 not in r["clients"] for r in rows(unlearned))
    # client 3 took part from round 1, so retraining is a run that never had it, bit for bit
    np.testing.assert_array_equal(final_params(tmp_path / "retrain"), final_params(never["run_dir"]))
    strip = {"contribution_s"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in untimed(rows(tmp_path / "retrain"))] == \
           [{k: v for k, v in r.items() if k not in strip} for r in untimed(rows(never["run_dir"]))]
    # FedEraser replayed 5 recorded rounds, calibrating all but the first (the model had not diverged yet)
    erased = rows(tmp_path / "federaser")
    assert [r["calibrated"] for r in erased] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert fingerprint(run_dir) == before


def test_resume_restores_the_ledger_and_contributions(source, tmp_path):
    run_dir, _ = source
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for checkpoint in (copy / "checkpoints").iterdir():
        if checkpoint.name > "round_000002.safetensors":
            checkpoint.unlink()
    (copy / "ledger" / "round_000004.parquet").write_bytes(b"left by a crash")
    cfg = load_config(copy / "config.yaml")
    assert run(prepare(cfg), console=lambda line: None, resume=str(copy))["status"] == "completed"
    assert fingerprint(copy / "ledger") == fingerprint(run_dir / "ledger")
    assert rows(copy, "contributions.parquet") == rows(run_dir, "contributions.parquet")


@pytest.mark.parametrize("change, args, expected", [
    (None, ["--clients", "4"], "unknown client id(s) [4]; the run has clients 0..3"),
    (None, ["--clients", "x"], "--clients 'x' must be client ids"),
    ("no ledger", ["--clients", "3", "--method", "federaser"], "has no update ledger"),
    ("other round", ["--clients", "3", "--method", "federaser"],
     "the ledger does not match the run: " + "{run}/ledger/round_000002.parquet: clients"),
    ("bigger model", ["--clients", "3", "--method", "federaser"], "updates of {num_params} parameters"),
])
def test_bad_unlearning_requests_exit_2(source, tmp_path, capsys, change, args, expected):
    run_dir, _ = source
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    if change == "no ledger":
        shutil.rmtree(target / "ledger")
    elif change == "other round":  # round 2's file replaced by a round that aggregated others
        table = pq.read_table(target / "ledger" / "round_000002.parquet")
        pq.write_table(table.slice(1), target / "ledger" / "round_000002.parquet")
    elif change == "bigger model":
        (target / "config.yaml").write_text((target / "config.yaml").read_text().replace("- 64", "- 65"))
    before = fingerprint(target)
    assert main(["unlearn", str(target), *args, f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    num_params = prepare(load_config(run_dir / "config.yaml")).num_params  # the recorded run's model
    assert expected.format(run=target, num_params=num_params) in err and "Traceback" not in err
    assert fingerprint(target) == before and not (tmp_path / "out").exists()


def test_unlearning_a_run_with_client_state_carries_the_others_states_and_deletes_the_clients(ray_cluster, tmp_path):
    """Top-k with error feedback keeps a residual per client in the stores. Retraining
    without a client that first took part after round 1 resumes from a checkpoint whose
    refs name other clients' residuals: the unlearned run reads them from its own store
    (carried there without the forgotten client's), and the source's store keeps nothing
    of the forgotten client."""
    from fedray.client.store import StateLost
    from tests.conftest import small_config
    from tests.helpers import kept_states

    cfg = small_config(tmp_path / "src", "clients.num_clients=6", "server.clients_per_round=2",
                       "server.checkpoint_every=1", "server.keep_checkpoints=5",
                       "clients.codec={name: top_k, args: {fraction: 0.2}}")
    run_dir = Path(run_quiet(cfg)["run_dir"])
    first = {}
    for row in rows(run_dir):
        for cid in row["clients"]:
            first.setdefault(cid, row["round"])
    later = sorted(cid for cid, r in first.items() if r > 1)
    assert later  # round 1 aggregates 2 of the 6 clients
    forget = later[0]
    assert main(["unlearn", str(run_dir), "--clients", str(forget), "name=retrain", f"output_dir={tmp_path}"]) == 0
    unlearned = tmp_path / "retrain"
    carried = kept_states(unlearned, load_config(unlearned / "config.yaml"))  # read and digest-checked
    assert forget not in carried and len(carried) >= 2
    with pytest.raises(StateLost, match=f"client {forget}'s state of round"):
        kept_states(run_dir, cfg)
