"""GrBFL on the command line: bad image input exits 2 with one message; show-granules draws."""

import numpy as np
import pytest

from fedray.cli.main import main
from tests.unit.data.test_images import tiny_idx, write_idx

GRANULAR = ["data.granular={}", "model.name=grb_gnn", "model.hidden=[8]"]


def idx_folder(tmp_path, broken=None):
    folder = tmp_path / "idx"
    folder.mkdir()
    tiny_idx(folder, train=40, test=10, size=(6, 6))
    if broken == "missing":
        (folder / "train-images-idx3-ubyte").unlink()
    elif broken == "shape":
        write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((10, 36)))
    return str(folder)


@pytest.mark.parametrize("overrides, expected", [
    (["data.granular.purity=0"], "data.granular.purity must be in (0, 1], got 0.0"),
    (["data.granular.purity=1.2"], "data.granular.purity must be in (0, 1], got 1.2"),
    (["data.granular.var_threshold=-1"], "data.granular.var_threshold must be >= 0, got -1.0"),
    (["data.dataset=idx", "data.path={missing}"], "missing IDX file(s) train-images-idx3-ubyte"),
    (["data.dataset=idx", "data.path={shape}"], "not images [N, height, width]"),
    (["data.dataset=text", "data.path={shape}"], "data.path"),
    (["model.name=mlp"], "model.name=mlp reads pixel rows, but data.granular"),
    (["data.partition=shards", "data.shards_per_client=0"], "data.shards_per_client must be >= 1, got 0"),
])
def test_bad_image_input_exits_2_with_one_message(tmp_path, capsys, overrides, expected):
    (tmp_path / "m").mkdir()
    (tmp_path / "s").mkdir()
    folders = {"missing": idx_folder(tmp_path / "m", "missing"), "shape": idx_folder(tmp_path / "s", "shape")}
    config = tmp_path / "exp.yaml"
    config.write_text(f"output_dir: {tmp_path}\n")
    args = [o.format(**folders) for o in overrides]
    assert main(["validate", str(config), *GRANULAR, *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(config) in err and "Traceback" not in err


def test_show_granules_draws_a_few_clients_and_the_histogram(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(f"output_dir: {tmp_path}\n")
    out = tmp_path / "granules.png"
    overrides = [*GRANULAR, "data.dataset=idx", f"data.path={idx_folder(tmp_path)}", "clients.num_clients=4", "server.clients_per_round=4"]
    assert main(["show-granules", str(config), *overrides, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "clients [0, 1, 2], 30 images, balls per image median" in printed and "of 36 pixels" in printed
    assert len(list((tmp_path / "granular_cache").glob("*.arrow"))) == 3  # the three shards, kept
    assert main(["show-granules", str(config), "data.dataset=idx", f"data.path={tmp_path}/none"]) == 2
