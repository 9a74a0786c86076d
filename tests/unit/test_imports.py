"""Every module imports; imports anywhere in a module (module level, inside functions,
under TYPE_CHECKING) form no cycle and point down the layers of ../shared/STYLE.md."""

import ast
import importlib
import pathlib

import pytest

import fedray

ROOT = pathlib.Path(fedray.__file__).parent

LAYERS = [
    ["types", "config"],
    ["transforms"],
    ["data"],
    ["models", "hetero"],
    ["selection", "strategy", "compress"],
    ["privacy"],
    ["cluster"],
    ["foundation", "lifecycle"],
    ["personalization"],
    ["client"],
    ["transport"],
    ["server"],
    ["sites"],
    ["driver", "signals", "session"],
    ["launcher"],
    ["experiments"],
    ["cli"],
]
"""A package may import its own modules and packages of lower layers only."""
LAYER = {package: i for i, packages in enumerate(LAYERS) for package in packages}


def module_names():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":  # importing it runs the CLI
            yield ".".join(parts), path


MODULES = dict(module_names())


def imports(path):
    """fedray modules imported anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedray"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fedray")}
    return {m for m in found if m in MODULES}


def package(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports(name):
    importlib.import_module(name)


def test_every_package_has_a_layer():
    assert {package(m) for m in MODULES} - {None} <= set(LAYER)


def test_imports_point_down_the_layers():
    wrong = []
    for name, path in MODULES.items():
        here = package(name)
        for target in imports(path):
            there = package(target)
            if here and there and there != here and LAYER[there] >= LAYER[here]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_import_cycles():
    graph = {name: imports(path) - {name} for name, path in MODULES.items()}
    state = {}

    def visit(node, stack):
        state[node] = "active"
        for nxt in graph[node]:
            # a package's __init__ importing its own submodules is not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "active":
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
