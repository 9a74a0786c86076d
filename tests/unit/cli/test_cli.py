"""The command line: exit status 2 and a one-paragraph message for every user mistake."""

import subprocess
import sys

import pytest

from fedray.cli.main import main
from tests.conftest import REPO


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("trian:\n  lr: 0.1\n", [], "trian: unknown key"),
        ("server:\n  rounds: many\n", [], "server.rounds: Value 'many'"),
        ("server:\n  rounds: -1\n", [], "server.rounds must be >= 1, got -1"),
        ("server:\n  clients_per_round: 11\n", [], "server.clients_per_round (11) must be <= clients.num_clients (10)"),
        ("data:\n  alpha: 0\n", [], "data.alpha must be > 0, got 0.0"),
        ("{}\n", ["server.strategy.name=fedavgg"], "Unknown strategy 'fedavgg'"),
        ("{}\n", ["data.dataset=mnist"], "Unknown dataset 'mnist'"),
        ("{}\n", ["server.selection.name=oorrt"], "Unknown selector 'oorrt'; choose one of ['deadline', 'oort'"),
        ("{}\n", ["clients.profiles.source=/nowhere/trace.csv"], "trace file not found: /nowhere/trace.csv"),
        ("{}\n", ["server.staleness=sqrt"], "server.staleness: Unknown staleness weighting 'sqrt'"),
        ("{}\n", ["server.strategy.args.betaa=1"], "server.strategy: strategy 'fedavg': unknown argument 'betaa'"),
        ("{}\n", ["server.aggregator.name=trimmed_mean", "server.aggregator.args.beta=0.7"],
         "server.aggregator: beta must be in [0, 0.5), got 0.7"),
        # dotted paths to the wrong kind of object are config errors, not tracebacks
        ("{}\n", ["server.strategy.name=tests.unit.config.plugins:text"],
         "strategy 'tests.unit.config.plugins:text' returned a str, expected Strategy"),
        ("{}\n", ["data.partition=tests.unit.config.plugins:one_argument"],
         "data.partition: partition 'tests.unit.config.plugins:one_argument': cannot be called"),
        # ... and code fedray may not call is refused before anything runs
        ("{}\n", ["server.strategy.name=os:getcwd"],
         "server.strategy: strategy 'os:getcwd' is not a factory fedray may call: module 'os' is part of "
         "Python's standard library"),
        ("{}\n", ["data.dataset=builtins:print"], "data.dataset: dataset 'builtins:print' is not a factory"),
        ("{}\n", ["model.name=os:system"], "model.name: model 'os:system' is not a factory"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_config_exits_2_naming_key_and_file(tmp_path, capsys, command, text, overrides, expected):
    path = write(tmp_path, text)
    assert main([command, path, *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert path in err or "Unknown" in err
    assert "Traceback" not in err


def test_every_component_problem_comes_in_one_pass(tmp_path, capsys):
    path = write(tmp_path, "server:\n  selection: {name: oorrt}\ndata:\n  dataset: mnist\n"
                           "model:\n  peft: {aggregation: sum}\n")
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    for expected in ("Unknown selector 'oorrt'", "Unknown dataset 'mnist'", "Unknown adapter aggregation 'sum'"):
        assert expected in err


def test_missing_config_file(tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    assert main(["run", missing]) == 2
    assert f"config file not found: {missing}" in capsys.readouterr().err


def test_validate_prints_the_resolved_config(tmp_path, capsys):
    path = write(tmp_path, "server:\n  rounds: 4\n")
    assert main(["validate", path, "train.lr=0.3"]) == 0
    out, err = capsys.readouterr()
    assert "rounds: 4" in out and "lr: 0.3" in out
    assert "# ok: 10 clients" in err


def test_real_process_exit_status_and_no_traceback(tmp_path):
    path = write(tmp_path, "server:\n  rounds: -2\n")
    proc = subprocess.run([sys.executable, "-m", "fedray", "run", path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "server.rounds must be >= 1, got -2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_overrides_may_follow_options(tmp_path, capsys):
    path = write(tmp_path, "{}\n")
    # checked before anything connects: the trailing override was applied
    assert main(["submit", path, "--address", "http://127.0.0.1:9", "server.rounds=-3"]) == 2
    assert "server.rounds must be >= 1, got -3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_report_on_something_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "is not a run directory: no metrics.parquet" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, "is not a fedray run directory (no config.yaml)"),
        ("{}\n", "did not train LoRA adapters (model.peft is null); nothing to export"),
        ("model:\n  peft: {r: 4}\n", "no checkpoint under"),
    ],
)
def test_export_refuses_what_it_cannot_export(tmp_path, capsys, config, expected):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_validating_a_model_without_adapters_never_imports_transformers():
    code = (
        "import sys; from fedray.cli.main import main; "
        "assert main(['validate', 'configs/quickstart.yaml']) == 0; "
        "print(sorted(m for m in ('transformers', 'peft', 'gguf') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
