"""Every module imports, and module-level imports form no cycle and never reach `cli`."""

import ast
import importlib
import pathlib

import pytest

import fedray

ROOT = pathlib.Path(fedray.__file__).parent


def module_names():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":
            yield ".".join(parts), path


MODULES = dict(module_names())


def top_level_imports(path):
    """fedray modules imported at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []:
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("fedray"):
                found.add(sub.module)
                for alias in sub.names:
                    if f"{sub.module}.{alias.name}" in MODULES:
                        found.add(f"{sub.module}.{alias.name}")
            elif isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("fedray")}
    return {m for m in found if m in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycles():
    graph = {name: top_level_imports(path) - {name} for name, path in MODULES.items()}
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


def test_nothing_imports_the_cli():
    for name, path in MODULES.items():
        if not is_cli(name):
            assert not any(is_cli(m) for m in top_level_imports(path)), name


def is_cli(name):
    return name == "fedray.cli" or name.startswith("fedray.cli.")
