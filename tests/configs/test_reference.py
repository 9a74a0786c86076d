"""Shipped configs load. (That the configuration reference names every key is
tests/docs/test_reference_docs.py's: the reference is generated from the schema.)"""

import pathlib

import pytest

from fedray.config import load_config
from tests.conftest import REPO


CONFIGS = sorted(p for p in (pathlib.Path(REPO) / "configs").glob("*.yaml"))
CONFIGS += sorted(p for p in (pathlib.Path(REPO) / "benchmarks" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_resolves(path):
    assert load_config(path).name
