"""The README's configuration reference names every config key, and shipped configs load."""

import dataclasses
import pathlib
import typing

import pytest

from fedray.config import load_config
from fedray.config.schema import RunConfig
from tests.conftest import REPO


def leaf_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


def test_readme_documents_every_config_key():
    # the README's reference, or a feature's guide under docs/guides/
    guides = sorted((pathlib.Path(REPO) / "docs" / "guides").glob("*.md"))
    readme = "\n".join(p.read_text() for p in [pathlib.Path(REPO) / "README.md", *guides])
    def documented(key):
        # a resources section may be documented as a whole ("same keys as clients.resources")
        parent = key.rsplit(".", 1)[0]
        return f"`{key}`" in readme or (parent.endswith("resources") and f"`{parent}" in readme)

    missing = [k for k in leaf_keys(RunConfig) if not documented(k)]
    assert not missing, f"README.md's configuration reference lacks {missing}"


CONFIGS = sorted(p for p in (pathlib.Path(REPO) / "configs").glob("*.yaml"))
CONFIGS += sorted(p for p in (pathlib.Path(REPO) / "benchmarks" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_resolves(path):
    assert load_config(path).name
