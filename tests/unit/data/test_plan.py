"""The data plan: the driver splits from labels or owners alone; each party builds its own rows."""

import hashlib
import pickle

import numpy as np
import pytest

from fedray.config import load_config
from fedray.config.errors import ConfigError
from fedray.config.schema import DataConfig
from fedray.config.sites import SiteConfig
from fedray.config.synthetic import SyntheticConfig
from fedray.data.federated import materialise
from fedray.data.images import IDX_FILES
from fedray.data.plan import DataPlan, DataSource, plan_federated_dataset
from tests.unit.data.test_images import tiny_idx

SMALL_SYNTHETIC = SyntheticConfig(size_log_mean=1.0, size_log_sigma=1.0, size_min=5, size_max=200)


@pytest.mark.parametrize("cfg, num_clients", [
    (DataConfig(dataset="digits", partition="dirichlet"), 10),
    (DataConfig(dataset="shakespeare", partition="natural", max_owners=4, seq_len=32), 4),
])
def test_shards_built_from_the_plan_are_the_materialised_dataset(cfg, num_clients):
    plan = plan_federated_dataset(cfg, None, num_clients, seed=3, public_size=20)
    whole = materialise(plan)
    for client_id in (0, num_clients - 1):
        shards, sources = plan.shard_plan([client_id]).build()
        assert shards[client_id].equals(whole.shard(client_id)) and sources == {}
    two = [1, num_clients - 1]
    shards, _ = plan.shard_plan(two).build()
    assert all(shards[c].equals(whole.shard(c)) for c in two)
    server = pickle.loads(pickle.dumps(plan.without_rows()))  # as the server actor gets it
    assert len(server.rows) == 0 and server.test.equals(whole.test) and server.public.equals(whole.public)
    assert np.array_equal(server.sizes(), np.diff(whole.offsets))


@pytest.mark.parametrize("cfg, num_clients", [
    (DataConfig(dataset="digits", partition="shards"), 10),
    (DataConfig(dataset="mnist5k", partition="iid", max_examples=1000), 5),
    (DataConfig(dataset="synthetic", partition="natural", synthetic=SMALL_SYNTHETIC), 100_000),
])
def test_the_driver_plans_without_loading_the_dataset(monkeypatch, cfg, num_clients):
    """Labels (or, for generated data, the owners from the clients' sizes) are all the
    plan reads: loading the dataset itself fails here."""
    def no_rows(*args, **kwargs):
        raise AssertionError("the driver loaded the dataset's rows")

    monkeypatch.setattr(DataSource, "load", no_rows)
    monkeypatch.setattr(DataSource, "tables", no_rows)
    plan = plan_federated_dataset(cfg, None, num_clients, seed=0)
    assert plan.num_clients == num_clients and plan.offsets[-1] == len(plan.rows)
    arrays = [plan.offsets, plan.rows, plan.test_rows, plan.public_rows]
    assert all(a.dtype == np.int64 and a.ndim == 1 for a in arrays)  # row numbers, not rows
    with pytest.raises(AssertionError, match="loaded the dataset's rows"):
        plan.test  # noqa: B018  (the server's split is built where it is asked for)


def idx_site(folder, seed):
    folder.mkdir()
    return tiny_idx(folder, train=9 + seed, test=2)


def test_site_clients_split_their_sites_files_read_where_they_run(tmp_path, monkeypatch):
    server, a, b = tmp_path / "server", tmp_path / "a", tmp_path / "b"
    tiny_idx(server.mkdir() or server)
    site_a, site_b = idx_site(a, 0), idx_site(b, 3)
    monkeypatch.setenv("SITE_A", str(a))  # a path that only resolves where this variable is set
    sites = [SiteConfig(clients=[2, 0], path="$SITE_A"), SiteConfig(clients=[1], path=str(b))]
    cfg = DataConfig(dataset="idx", path=str(server), sites=sites)
    plan = plan_federated_dataset(cfg, None, 3, seed=0)
    assert plan.offsets is None and len(plan.rows) == 0 and len(plan.test_rows) == 4  # the server's t10k
    shards, sources = plan.shard_plan([0, 1, 2]).build()
    sizes = {c: shards[c].num_rows for c in range(3)}
    assert sizes[0] + sizes[2] == len(site_a["train-labels-idx1-ubyte"])  # all of A's training rows, none of t10k
    assert sizes[1] == len(site_b["train-labels-idx1-ubyte"])
    folder_hash = hashlib.sha256()
    for name in sorted(IDX_FILES):
        folder_hash.update(name.encode() + b"\0" + (a / name).read_bytes())
    assert sources[0] == sources[2] == f"{a} sha256:{folder_hash.hexdigest()}"
    alone, _ = plan.shard_plan([2]).build()  # one client's actor splits its site the same way
    assert alone[2].equals(shards[2])
    assert plan.with_sizes([sizes[c] for c in range(3)]).num_examples(1) == sizes[1]


def test_a_site_path_missing_on_the_clients_node_is_an_error_naming_the_site(tmp_path):
    server = tmp_path / "server"
    tiny_idx(server.mkdir() or server)
    sites = [SiteConfig(clients=[0], path=str(server)), SiteConfig(clients=[1], path=str(tmp_path / "elsewhere"))]
    plan = plan_federated_dataset(DataConfig(dataset="idx", path=str(server), sites=sites), None, 2, seed=0)
    with pytest.raises(ValueError, match=r"data.sites\[1\].path: no such file or folder on this node: .*elsewhere"):
        plan.shard_plan([1]).build()


@pytest.mark.parametrize("overrides, message", [
    (["data.sites=[{clients: [0, 1], path: /a}]"], r"data.sites reads each site's files with data.dataset"),
    (["data.dataset=idx", "data.sites=[{clients: [0, 1], path: /a}]"], r"data.sites needs data.path"),
    (["data.dataset=idx", "data.path=/s", "data.sites=[{clients: [0, 1], path: /a}, {clients: [1, 2], path: /b}]"],
     r"data.sites\[1\].clients \[1\] are already at data.sites\[0\]"),
    (["data.dataset=idx", "data.path=/s", "data.sites=[{clients: [0, 7], path: /a}]"],
     r"data.sites\[0\].clients \[7\] out of range 0..2"),
    (["data.dataset=idx", "data.path=/s", "data.sites=[{clients: [0, 1], path: /a}]"],
     r"data.sites: clients \[2\] are at no site"),
    (["data.dataset=idx", "data.path=/s", "data.sites=[{clients: [0, 1, 2], path: ''}]"],
     r"data.sites\[0\].path is empty"),
])
def test_site_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["clients.num_clients=3", "server.clients_per_round=3", *overrides])


def test_the_plan_that_travels_holds_no_loaded_rows():
    plan = plan_federated_dataset(DataConfig(), None, 4, seed=0)
    plan.test  # noqa: B018  (loaded and kept in this process)
    assert "_held_out" in plan.__dict__
    travelled = pickle.loads(pickle.dumps(plan))
    assert isinstance(travelled, DataPlan) and "_held_out" not in travelled.__dict__
