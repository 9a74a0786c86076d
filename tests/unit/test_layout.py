"""Test modules have unique basenames: pytest's default import mode cannot collect two
`test_x.py` in different folders of one run (CI runs the whole tree at once)."""

import collections
import pathlib


def test_test_module_names_are_unique():
    root = pathlib.Path(__file__).resolve().parents[1]
    names = collections.Counter(p.name for p in root.rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []
