"""Ray actor classes the driver can create without importing their modules.

`ray.remote(ClientActor)` needs the class, and importing `fedray.client.actor` (or
`fedray.server.actor`) imports torch: seconds of CPU and a few hundred MB in a driver
that never trains. `remote_class("fedray.client.actor:ClientActor")` builds a stand-in
with the same name and the same public methods, read from the module's source
without running it; in the worker, its constructor imports the module and builds
the real object, and each method forwards to it. Handles, `ray.get_actor`, restarts
and errors behave as with the class itself (a method's exception is the cause of
the `RayTaskError`, as before).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from typing import Any, Callable


@functools.cache
def remote_class(path: str) -> Any:
    """A Ray actor class standing in for the class at `path` (`package.module:Class`)."""
    import ray

    module, name = path.split(":")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._target = getattr(importlib.import_module(module), name)(*args, **kwargs)

    namespace: dict[str, Any] = {"__init__": __init__, "__doc__": f"Forwards to `{path}`, built in the worker."}
    for method in public_methods(module, name):
        namespace[method] = _forward(method)
    return ray.remote(type(name, (), namespace))


def _forward(method: str) -> Callable:
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._target, method)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = method
    return forward


def public_methods(module: str, name: str) -> list[str]:
    """The public methods class `name` defines in `module`'s source (it must have no
    base classes: inherited methods would not be seen)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"no source for {module}"
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            assert not node.bases, f"{module}:{name} has base classes; forward them too"
            return [item.name for item in node.body
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                    and not any(_decorator_name(d) in ("staticmethod", "classmethod", "property")
                                for d in item.decorator_list)]
    raise AssertionError(f"class {name} not found in {module}")


def _decorator_name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
