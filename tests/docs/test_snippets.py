"""Every snippet in the documentation is checked: YAML configs validate as `fedray validate`
would, shell commands name configs that exist (with overrides that load), and sample console
output says where it came from. Markers are described in tests/docs/doc_blocks.py."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from omegaconf import OmegaConf

from fedray.config.load import load_config, load_config_text
from fedray.launcher import prepare
from tests.docs.doc_blocks import ROOT, all_blocks, shell_lines

YAML = all_blocks("yaml", "yml")
SHELL = all_blocks("bash", "sh", "shell", "console")
DEFAULT_BASE = "configs/quickstart.yaml"
CONFIG_COMMANDS = {"run", "validate", "submit", "sweep", "show-granules"}


def test_there_are_snippets_to_check():
    assert len(YAML) >= 5 and len(SHELL) >= 20


def config_text(block) -> str:
    """The block as a whole config: itself, or (a fragment) merged onto its base config."""
    kind, what = block.marker or ("", "")
    if kind == "snippet" and what.startswith("fragment"):
        base = what.removeprefix("fragment").strip().removeprefix("of").strip() or DEFAULT_BASE
        merged = OmegaConf.merge(yaml.safe_load((ROOT / base).read_text()), yaml.safe_load(block.text))
        return OmegaConf.to_yaml(merged)
    return block.text


@pytest.mark.parametrize("block", YAML, ids=[b.where for b in YAML])
def test_yaml_snippet_validates(block, tmp_path, monkeypatch):
    if block.marker == ("snippet", "not a fedray config"):
        assert yaml.safe_load(block.text) is not None, f"{block.where}: not even YAML"
        return
    if block.marker == ("snippet", "site config"):  # `fedray site serve SITE.yaml`'s own YAML
        from fedray.sites.config import load_site_config

        (tmp_path / "site.yaml").write_text(block.text)
        assert load_site_config(str(tmp_path / "site.yaml")).name
        return
    monkeypatch.chdir(ROOT)  # dotted paths (examples.*) resolve from the repository root
    cfg = load_config_text(config_text(block), block.where, [f"output_dir={tmp_path}"])
    assert prepare(cfg, block.where).num_params > 0


def config_commands():
    """(block, argv) of every `fedray <command> CONFIG ...` line in a shell block."""
    for block in SHELL:
        for line in shell_lines(block):
            for command in re.split(r"\s*(?:&&|\|\||;)\s*", line):
                argv = shlex.split(command)
                while argv and argv[0] in (".venv/bin/fedray", "fedray", "python", "-m") and argv[0] != "fedray":
                    argv = argv[1:]
                if len(argv) >= 3 and argv[0] == "fedray" and argv[1] in CONFIG_COMMANDS:
                    yield block, argv


def names_a_real_config(arg: str) -> bool:
    """A config argument that is not a placeholder (CONFIG, RUN_DIR/config.yaml) or a run's own."""
    return arg.endswith((".yaml", ".yml")) and not re.search(r"[A-Z]{3,}", arg) and not arg.startswith("runs/")


COMMANDS = [(b, argv) for b, argv in config_commands() if names_a_real_config(argv[2])]


def test_the_docs_name_configs():
    assert len(COMMANDS) >= 15


FLAGS = {"--verbose", "--no-wait", "--fresh", "--merged", "--follow", "-f", "--no-reuse", "--all", "--json"}


def takes_a_value(arg: str) -> bool:
    """An option whose value is the next argument (`--grid data.alpha=0.1,1.0` is no override)."""
    return arg.startswith("-") and "=" not in arg and arg not in FLAGS


@pytest.mark.parametrize("block,argv", COMMANDS, ids=[f"{b.where} {' '.join(a[:3])}" for b, a in COMMANDS])
def test_shell_command_names_a_config_that_loads(block, argv):
    path = ROOT / argv[2]
    assert path.is_file(), f"{block.where}: `{' '.join(argv)}` names {argv[2]}, which does not exist"
    overrides = [a for prev, a in zip(argv[2:], argv[3:])
                 if "=" in a and not a.startswith("-") and not takes_a_value(prev)]
    load_config(path, overrides)  # the overrides the docs show are real keys with valid values


OUTPUT_LINE = re.compile(r"^(fedray: |round \d+/\d+ \|)", re.M)
CONSOLE = [b for b in all_blocks() if b.lang not in ("bash", "sh", "shell", "yaml", "python")
           and OUTPUT_LINE.search(b.text)]


def test_there_is_sample_output():
    assert CONSOLE


@pytest.mark.parametrize("block", CONSOLE, ids=[b.where for b in CONSOLE])
def test_sample_output_says_where_it_came_from(block):
    kind, what = block.marker or ("", "")
    assert kind == "output" and what.startswith(("real run", "abridged")), (
        f"{block.where}: sample console output must be marked <!-- output: real run ... --> "
        "(copied from a run: say which and when) or <!-- output: abridged ... -->")
    if "..." in block.text.splitlines():
        assert "abridged" in what or "rounds left out" in what, f"{block.where}: lines left out; say so"
