"""The configuration reference, generated from the schema: every key of `RunConfig` with its
type, default and attribute docstring, so the page cannot drift from the code.

Imported by the MkDocs hook (`docs/hooks/fedray_site.py`) and by tests/docs/ (coverage).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import textwrap
import typing
from functools import lru_cache
from types import UnionType
from typing import Any, Iterator

import yaml


@dataclasses.dataclass(frozen=True)
class Key:
    """One documented config key."""

    path: str
    type: str
    default: str
    doc: str
    section: bool  # a nested section (its sub-keys follow)


@lru_cache(maxsize=None)
def attribute_docs(cls: type) -> dict[str, str]:
    """`{field: docstring}` of a class's attribute docstrings (the string literal under a field)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body  # the ClassDef's statements
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1:
            return members[0], True
    return hint, False


def _nested(hint: Any) -> tuple[type | None, str]:
    """(dataclass a key descends into, suffix for its path: '' or '[]' for a list of them)."""
    inner, _ = _strip_optional(hint)
    if dataclasses.is_dataclass(inner) and inner.__name__ != "ComponentConfig":
        return inner, ""
    if typing.get_origin(inner) in (list, typing.List):
        (item,) = typing.get_args(inner) or (None,)
        if dataclasses.is_dataclass(item) and item.__name__ != "ComponentConfig":
            return item, "[]"
    return None, ""


def type_name(hint: Any) -> str:
    """A short, YAML-minded name of a field's type."""
    inner, optional = _strip_optional(hint)
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        name = " \\| ".join(f"`{m.value}`" for m in inner)
    elif dataclasses.is_dataclass(inner):
        name = "`{name, args}`" if inner.__name__ == "ComponentConfig" else "section"
    elif typing.get_origin(inner) in (list, typing.List):
        (item,) = typing.get_args(inner)
        name = f"list of {type_name(item)}"
    elif typing.get_origin(inner) in (dict, typing.Dict):
        name = "mapping"
    else:
        name = getattr(inner, "__name__", str(inner).replace("typing.", ""))
        name = {"Any": "any"}.get(name, name)
    return f"{name} or null" if optional else name


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def default_text(f: dataclasses.Field) -> str:
    """The default as it would be written in YAML (a whole section's default is not shown)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    text = yaml.safe_dump(_plain(value), default_flow_style=True, sort_keys=False, width=10**6)
    return f"`{text.strip().removesuffix('...').strip()}`"


def iter_keys(cls: type, prefix: str = "") -> Iterator[Key]:
    """Every key of a schema dataclass, depth first, in declaration order."""
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        path = prefix + f.name
        nested, suffix = _nested(hint)
        doc = docs.get(f.name, "")
        if nested is not None:
            if not doc and nested.__doc__ and not nested.__doc__.startswith(nested.__name__ + "("):
                doc = inspect.cleandoc(nested.__doc__)
            default = default_text(f) if _strip_optional(hint)[1] or suffix else "—"
            yield Key(path + suffix, type_name(hint), default, doc, True)
            yield from iter_keys(nested, f"{path}{suffix}.")
        else:
            yield Key(path, type_name(hint), default_text(f), doc, False)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "—"


def render(root: type | None = None) -> str:
    """The reference page: one table per top-level section."""
    if root is None:
        from fedray.config.schema import RunConfig as root  # noqa: N813
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema (`fedray/config/schema.py`, `sections.py` and the modules they",
        "compose) when the site is built: each key's type, default and the docstring of its field.",
        "A config is layered: these defaults, then the YAML file, then `key=value` overrides.",
        "Unknown keys are errors. A `{name, args}` component takes a registered name or a dotted",
        "path `package.module:factory`; the names and factory signatures are in",
        "[Components](components.md).",
        "",
    ]
    table_open = None
    for key in iter_keys(root):
        if key.section and "." not in key.path:
            continue  # a top-level section is its table's heading
        top = key.path.split(".")[0].removesuffix("[]")
        section = top if "." in key.path or key.section else "run"
        if section != table_open:
            out += ["", f"## `{section}`" if section != "run" else "## Top level", ""]
            out += ["| key | type | default | meaning |", "|---|---|---|---|"]
            table_open = section
        out.append(f"| `{key.path}` | {key.type} | {key.default} | {_cell(key.doc)} |")
    return "\n".join(out) + "\n"
