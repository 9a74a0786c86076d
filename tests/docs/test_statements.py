"""Statements the documentation makes that were once wrong (issue 31), each kept true by a
check against the code or against every page."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest

from fedray.config import load_config
from fedray.config.errors import ConfigError
from fedray.config.load import load_config_text
from fedray.launcher import prepare
from tests.docs.doc_blocks import ROOT, all_blocks, blocks, shell_lines

SHELL = all_blocks("bash", "sh", "shell", "console")


def commands():
    for block in SHELL:
        for line in shell_lines(block):
            for command in re.split(r"\s*(?:&&|\|\||;)\s*", line):
                yield block, command


def shape(line: str) -> list[str]:
    """A console line's fields without their numbers: `['round N/N', 'clients N/N', ...]`."""
    return [" ".join(re.sub(r"\d[\d.,]*", "N", part).split()) for part in line.split(" | ")]


def test_the_quickstart_output_is_a_classifiers():
    """The quickstart trains a classifier: its rounds print what `format_round` prints for
    one (no perplexity, which only language models have)."""
    from fedray.driver import format_round
    from fedray.types import RoundResult

    (sample,) = [b for b in blocks(ROOT / "docs" / "getting-started" / "quickstart.md") if b.marker
                 and b.marker[0] == "output"]
    assert load_config(ROOT / "configs" / "quickstart.yaml").model.name == "mlp"
    line = format_round(RoundResult(20, 10, 10, 0, 0, 1, 0.1, 0.2, 0.9, 0, 0, 0.5, 9.0, sim_time_s=80.0), 20)
    documented = [row for row in sample.text.splitlines() if row.startswith("round ")]
    assert documented
    for row in documented:
        assert shape(row) == shape(line)
    assert "perplexity" not in sample.text


def test_no_page_ends_a_loop_with_ray_stop():
    """`ray stop` stops every Ray instance on the host (it takes no address). Only tearing
    down a hand-started node of a cluster (cluster/README.md, which says so) may use it."""
    offending = [f"{b.where}: {c}" for b, c in commands() if re.match(r"(\S*/)?ray stop\b", c)
                 and b.path != ROOT / "cluster" / "README.md"]
    assert not offending


@pytest.mark.parametrize("command", ["submit", "jobs", "logs", "stop"])
def test_cluster_commands_name_their_cluster(command):
    """Without --address these default to http://127.0.0.1:8265, whoever's dashboard that is."""
    found = [(b, c) for b, c in commands() if re.search(rf"(^|/)fedray {command}\b", c)]
    assert found or command == "jobs"
    missing = [f"{b.where}: {c}" for b, c in found if "--address" not in shlex.split(c)]
    assert not missing


def test_the_cli_says_where_cluster_commands_go_by_default():
    from fedray.cli.main import build_parser

    jobs = build_parser()._subparsers._group_actions[0].choices["jobs"]  # noqa: SLF001
    address = next(a for a in jobs._actions if "--address" in a.option_strings)  # noqa: SLF001
    assert "127.0.0.1:8265" in address.help
    guide = (ROOT / "docs" / "guides" / "clusters.md").read_text()
    assert "http://127.0.0.1:8265" in guide and "RAY_API_SERVER_ADDRESS" in guide


def dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_no_page_asks_to_pip_install_a_dependency():
    """What fedray depends on is installed with it (`gguf` for the GGUF models, say)."""
    deps = dependencies()
    assert "gguf" in deps
    told = []
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").glob("*/README.md")]:
        for match in re.finditer(r"pip install ([^`\n)]*)", path.read_text()):
            names = [a for a in match.group(1).split() if not a.startswith("-") and "/" not in a and "." != a]
            told += [f"{path.relative_to(ROOT)}: {n}" for n in names
                     if re.split(r"[<>=\[]", n.strip("'\""), maxsplit=1)[0].lower() in deps]
    assert not told


def test_schema_problems_come_first_then_the_components():
    """The command-line page says the checks run in two passes: a bad key and an unknown
    strategy in one file are reported one pass after the other."""
    text = "server: {rounds: 0, strategy: {name: fedavgx}}\n"
    with pytest.raises(ConfigError, match=r"server\.rounds must be >= 1") as first:
        load_config_text(text, "two.yaml")
    assert "fedavgx" not in str(first.value)
    cfg = load_config_text(text.replace("rounds: 0", "rounds: 1"), "two.yaml")
    with pytest.raises(ConfigError, match=r"Unknown strategy 'fedavgx'; choose one of"):
        prepare(cfg, "two.yaml")
    page = (ROOT / "docs" / "getting-started" / "command-line.md").read_text()
    assert "two passes" in page


def test_a_byte_tokenizer_is_exported_as_files_transformers_loads(tmp_path):
    """`fedray export` writes the byte tokenizer as tokenizer files with the same ids (the
    LoRA and instruction-tuning guides say so)."""
    from transformers import AutoTokenizer

    from fedray.data.tokenize import ByteTokenizer

    ByteTokenizer().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("é!", add_special_tokens=False)["input_ids"] == list("é!".encode())
    assert loaded.eos_token_id == ByteTokenizer.eos_id
    assert "a `byte` run's tokenizer" in (ROOT / "docs" / "guides" / "lora.md").read_text()


def test_a_codec_on_the_updates_is_refused_with_secure_aggregation():
    cfg = load_config(ROOT / "configs" / "secagg.yaml", ["clients.codec.name=int8"])
    with pytest.raises(ConfigError, match=r"clients\.codec"):
        prepare(cfg, "configs/secagg.yaml")
