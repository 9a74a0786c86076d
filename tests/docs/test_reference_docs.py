"""The generated references cover the code: every schema key once, every registry a config
can name, every command; and the site builds strictly (broken links, missing pages fail)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import typing

import pytest

import fedray
from fedray.config.registry import Registry
from fedray.config.schema import RunConfig
from tests.docs.doc_blocks import ROOT
from tests.docs.site_hooks import code_reference, config_reference


def schema_keys(cls, prefix=""):
    """Every key of the schema, sections included, found independently of the generator."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = args[0] if len(args) == 1 and typing.get_origin(hint) is not list else hint
        key = prefix + f.name
        if (typing.get_origin(hint) in (list, typing.List) and dataclasses.is_dataclass(args[0])
                and args[0].__name__ != "ComponentConfig"):
            yield key + "[]"
            yield from schema_keys(args[0], f"{key}[].")
        elif dataclasses.is_dataclass(inner) and inner.__name__ != "ComponentConfig":
            if prefix:  # top-level sections are the page's headings
                yield key
            yield from schema_keys(inner, key + ".")
        else:
            yield key


def test_the_configuration_reference_lists_every_key_once():
    page = config_reference.render()
    rows = re.findall(r"^\| `([^`]+)` \|", page, re.M)
    keys = list(schema_keys(RunConfig))
    assert len(keys) > 150
    assert sorted(rows) == sorted(keys)  # every key, none twice (server.selection.name once)


def test_every_schema_field_says_what_it_is():
    undocumented = [k.path for k in config_reference.iter_keys(RunConfig) if not k.doc and "." in k.path]
    assert not undocumented, f"fields without an attribute docstring: {undocumented}"


def test_the_reference_shows_the_schema_defaults():
    page = config_reference.render()
    assert "| `server.rounds` | int | `10` |" in page
    assert "| `server.strategy` | `{name, args}` | `{name: fedavg, args: {}}` |" in page
    assert "| `server.mode` | `sync` \\| `async` | `sync` |" in page


def all_registries():
    """Every Registry instance in fedray's modules, by identity."""
    found = {}
    skip = ("fedray.cli", "fedray.__main__")
    for info in pkgutil.walk_packages(fedray.__path__, "fedray."):
        if info.name.startswith(skip):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional heavy dependencies are not a registry's concern
            continue
        for value in vars(module).values():
            if isinstance(value, Registry):
                found[id(value)] = value
    return found.values()


INTERNAL = {"task", "public-set task", "distillation loss", "dataset index"}
"""Registries that no config key names (chosen by fedray from the data and model)."""


def test_the_components_reference_covers_every_registry():
    listed = {registry.kind for _, registry, _ in code_reference.registered()}
    kinds = {registry.kind for registry in all_registries()}
    assert kinds - INTERNAL <= listed, f"registries missing from docs/hooks/code_reference.py: {kinds - listed}"
    page = code_reference.render_components()
    for _, registry, _ in code_reference.registered():
        for name in registry.names():
            assert f"| `{name}` |" in page


def test_the_cli_reference_has_every_command():
    from fedray.cli.main import COMMANDS

    page = code_reference.render_cli()
    for command in COMMANDS:
        assert f"## `fedray {command}`" in page
    assert "## `fedray watermark verify`" in page


def test_the_site_builds_strictly(tmp_path):
    """`make docs`: MkDocs with `strict: true`: a broken link, a missing page or anchor,
    or a page left out of the nav fails the build."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "WARNING" not in done.stderr, done.stderr[-4000:]  # (-q would hide them from strict mode)
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
    assert (tmp_path / "site" / "guides" / "index.html").is_file()


@pytest.mark.parametrize("png", sorted(p.name for p in (ROOT / "docs").glob("*.png")))
def test_images_keep_their_paths(png):
    """README, benchmarks/README.md and the guides link docs/*.png by these paths."""
    users = [ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")]
    assert any(png in p.read_text() for p in users), f"docs/{png} is used by no page"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "make run" in readme and "make test" in readme  # a CI hook greps for both


@pytest.mark.parametrize("page", ["README.md", "benchmarks/README.md", "cluster/README.md",
                                  *[str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("examples/*/README.md"))]])
def test_repository_pages_link_to_files_that_exist(page):
    """Pages read on the repository (not on the site, whose build checks its own links)."""
    path = ROOT / page
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    broken = [link for link in links if "://" not in link and not (path.parent / link).exists()]
    assert not broken, f"{page} links to missing files: {broken}"


def test_links_out_of_the_docs_go_to_the_site_or_name_the_file():
    """A guide written for reading on the repository links `../../README.md#x` or a config;
    on the site those become the site's page or the file's repository path."""
    from tests.docs.site_hooks import fedray_site

    docs = ROOT / "docs"
    text = ("[a](../../README.md#quickstart) [b](../../benchmarks/README.md#privacy) "
            "[c](../../configs/quickstart.yaml) [d](../../configs/nope.yaml) [e](plugins.md#state)")
    out = fedray_site.outside_links(text, "guides/x.md", docs)
    assert out == ("[a](../index.md) [b](../benchmarks.md#privacy) c (`configs/quickstart.yaml`) "
                   "[d](../../configs/nope.yaml) [e](plugins.md#state)")
