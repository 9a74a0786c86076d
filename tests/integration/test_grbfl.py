"""GrBFL end to end on a real local Ray: clients segment their MNIST shards at start-up,
train a graph network on the ball graphs, and the global model learns."""

import pyarrow.parquet as pq

from fedray.cli.main import main
from fedray.config import load_config
from fedray.data.federated import build_federated_dataset
from fedray.data.granular.graphs import cache_key
from fedray.data.arrow import to_numpy
from fedray.launcher import prepare, run
from fedray.models.build import build_model
from fedray.models.flat import param_spec
from tests.conftest import REPO


def test_the_shipped_config_learns_and_caches_every_shard(ray_cluster, tmp_path, capsys):
    """configs/grbfl_mnist.yaml as shipped (the authors' attention network, GrBFL's
    default segmentation): well above chance, with batch-norm statistics in every update."""
    cfg = load_config(f"{REPO}/configs/grbfl_mnist.yaml", [f"output_dir={tmp_path}"])
    prepared = prepare(cfg)
    summary = run(prepared, console=[].append)
    assert summary["status"] == "completed" and summary["rounds_completed"] == cfg.server.rounds
    rows = pq.read_table(tmp_path / "grbfl_mnist" / "metrics.parquet").to_pylist()
    assert rows[-1]["eval_accuracy"] > 0.35  # chance is 0.1
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]
    spec = param_spec(build_model(cfg.model, prepared.dataset.info, cfg.seed))
    assert any(n.endswith("running_var") for n in spec.names)
    assert rows[0]["bytes_up"] == cfg.server.clients_per_round * spec.num_bytes

    # every client's shard and the server's test set were segmented once and kept
    dataset = build_federated_dataset(cfg.data, cfg.clients.num_clients, cfg.seed)
    tables = [dataset.shard(c) for c in range(cfg.clients.num_clients)] + [dataset.test]
    expected = {cache_key(*to_numpy(t), (28, 28), cfg.data.granular) for t in tables}
    assert {p.stem for p in (tmp_path / "granular_cache").glob("*.arrow")} == expected

    # the picture of a finished run reads those shards back from the cache
    out = tmp_path / "granules.png"
    assert main(["show-granules", str(tmp_path / "grbfl_mnist"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and "of 784 pixels" in capsys.readouterr().out
