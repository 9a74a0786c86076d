"""The component and CLI references, generated from the code: every registry's names with
their factories' signatures and the contract each kind must meet, and every command's
argparse help. Imported by the MkDocs hook (`docs/hooks/fedray_site.py`) and by tests/docs/.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
from typing import Any, Iterator

# (config keys, "module:REGISTRY"); modules imported first so that every built-in registers
# (the same imports `fedray.launcher` makes before it checks a config).
REGISTRIES = [
    ("server.strategy", "fedray.strategy.presets:STRATEGIES"),
    ("server.aggregator", "fedray.strategy.aggregate:AGGREGATORS"),
    ("clients.transforms, server.transforms", "fedray.transforms:TRANSFORMS"),
    ("clients.objective", "fedray.strategy.terms:TERMS"),
    ("clients.personalization", "fedray.personalization.base:PERSONALIZATIONS"),
    ("clients.codec, server.codec", "fedray.compress.codec:CODECS"),
    ("server.selection.name", "fedray.selection.base:SELECTORS"),
    ("server.staleness", "fedray.strategy.staleness:STALENESS"),
    ("server.privacy", "fedray.privacy.mechanism:PRIVACY"),
    ("server.secure_aggregation", "fedray.privacy.build:SECURE_AGGREGATION"),
    ("server.contribution.name", "fedray.lifecycle.contribution:CONTRIBUTIONS"),
    ("server.watermark.name", "fedray.lifecycle.watermark.scheme:SCHEMES"),
    ("data.dataset", "fedray.data.datasets:DATASETS"),
    ("data.partition", "fedray.data.partition:PARTITIONERS"),
    ("data.tokenizer", "fedray.data.tokenize:TOKENIZERS"),
    ("data.schedule.name", "fedray.lifecycle.continual.schedule:SCHEDULES"),
    ("model.name", "fedray.models.build:MODELS"),
    ("model.peft.aggregation", "fedray.strategy.lora:ADAPTER_AGGREGATIONS"),
    ("model.peft.rank_rule", "fedray.models.adapters:RANK_RULES"),
    ("clients.attack.name", "fedray.client.attacks:ATTACKS"),
    ("clients.profiles.source", "fedray.hetero.devices:DEVICE_SOURCES"),
    ("clients.availability.model", "fedray.hetero.availability:AVAILABILITY"),
]
REGISTERING = ["fedray.strategy", "fedray.selection", "fedray.compress", "fedray.privacy",
               "fedray.lifecycle.continual", "fedray.lifecycle.contribution", "fedray.lifecycle.watermark",
               "fedray.data.datasets", "fedray.data.images", "fedray.data.text", "fedray.data.shakespeare",
               "fedray.data.synthetic", "fedray.models.build", "fedray.models.hf", "fedray.client.attacks",
               "fedray.hetero.devices", "fedray.hetero.availability", "fedray.personalization"]


def _registry(spec: str) -> tuple[Any, str]:
    """(the Registry, the contract: the docstring under its assignment, if any)."""
    module_name, attr = spec.split(":")
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    contract = ""
    for stmt, nxt in zip(tree.body, tree.body[1:]):
        targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else getattr(stmt, "targets", [])
        if (any(isinstance(t, ast.Name) and t.id == attr for t in targets) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            contract = inspect.cleandoc(nxt.value.value)
    return getattr(module, attr), contract


def _signature(builder: Any) -> str:
    try:
        text = str(inspect.signature(builder))
    except (TypeError, ValueError):
        return "(...)"
    return text.replace("'", "")


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def spec_of(registry: Any) -> str:
    """`module:NAME` of a registry, as REGISTRIES names it."""
    return next(spec for _, spec in REGISTRIES if _registry(spec)[0] is registry)


def registered() -> Iterator[tuple[str, Any, str]]:
    """(config keys, registry, contract) for every registry a config names."""
    for module in REGISTERING:
        importlib.import_module(module)
    for keys, spec in REGISTRIES:
        registry, contract = _registry(spec)
        yield keys, registry, contract


def render_components() -> str:
    """The components page: per registry, what it must return and each built-in's factory."""
    out = ["# Components", "",
           "Generated from the registries (`fedray/config/registry.py` and the modules that",
           "register built-ins) when the site is built. A component in a config is",
           "`{name, args}`: `name` is one of the names below or a dotted path",
           "`package.module:factory` to your own; `args` are the factory's keyword arguments,",
           "checked against its signature before Ray starts. Positional parameters are given",
           "by fedray (see [Writing a plug-in](../guides/plugins.md)).", ""]
    for keys, registry, contract in registered():
        out += [f"## {registry.kind}", "", "Config: " + ", ".join(f"`{k.strip()}`" for k in keys.split(",")), ""]
        if registry.returns is not None:
            want = registry.returns if isinstance(registry.returns, tuple) else (registry.returns,)
            out += ["Must return: " + " or ".join(f"`{t.__module__}.{t.__name__}`" for t in want), ""]
        if contract:
            out += [contract, ""]
        out += [f"Registry: `{spec_of(registry)}`", ""]
        out += ["| name | factory (where it registers) | what it is |", "|---|---|---|"]
        for name in registry.names():
            builder = registry.get(name)
            sig, what = _signature(builder).replace("|", "\\|"), _first_line(builder).replace("|", "\\|")
            where = f"{getattr(builder, '__module__', '?')}:{getattr(builder, '__name__', name)}"
            out.append(f"| `{name}` | `{where}{sig}` | {what or '—'} |")
        out.append("")
    return "\n".join(out)


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to list subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def render_cli() -> str:
    """The CLI page: every command's `--help`, as argparse prints it."""
    from fedray.cli.main import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; a fixed width keeps the page stable
    parser = build_parser()
    out = ["# Command line", "",
           "Generated from `fedray/cli/main.py`'s argparse parser when the site is built. Bad input",
           "(a config error, a missing file, resources the cluster lacks) prints one message and exits",
           "with status 2; Ctrl-C exits with 130 and SIGTERM with 143, after the round in progress.", "",
           "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subcommands(parser, "fedray"):
        out += [f"## `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)
