"""`fedray sweep` on a local Ray, then `fedray report` on the two run directories."""

from pathlib import Path

import pyarrow.parquet as pq

from fedray.cli.main import main


def test_sweep_runs_each_combination_and_report_compares_them(ray_cluster, tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(
        "name: exp\nclients:\n  num_clients: 4\n  placement: pool\n  pool_size: 1\n"
        "  resources: {num_cpus: 1}\nserver:\n  rounds: 2\n  clients_per_round: 4\n"
        "sweep:\n  grid:\n    train.lr: [0.02, 0.2]\n"
    )
    # a file:// URI goes through the same pyarrow.fs path handling as s3:// would
    assert main(["sweep", str(config), f"output_dir=file://{tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    run_dirs = sorted((tmp_path / "runs").iterdir())
    assert [p.name for p in run_dirs] == ["exp-lr=0.02", "exp-lr=0.2"]
    for run_dir in run_dirs:
        assert len(pq.read_table(run_dir / "metrics.parquet")) == 2
        assert pq.read_table(run_dir / "clients.parquet").column("client_id").to_pylist() == [0, 1, 2, 3]
    assert f"completed  exp-lr=0.2  file://{tmp_path}/runs/exp-lr=0.2" in out and "fedray report" in out

    report = tmp_path / "report"
    assert main(["report", *(f"file://{p}" for p in run_dirs), "--out", str(report)]) == 0
    table = capsys.readouterr().out
    assert "| run | train.lr | rounds |" in table and "| exp-lr=0.2 | 0.2 | 2 |" in table
    pngs = sorted(p.name for p in Path(report).glob("*.png"))
    assert pngs == ["accuracy_vs_bytes.png", "accuracy_vs_bytes_up.png", "accuracy_vs_round.png",
                    "accuracy_vs_time.png", "bytes_per_round.png", "loss_vs_round.png", "loss_vs_time.png"]
