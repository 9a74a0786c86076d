"""The trust boundary for code: which dotted paths fedray may import and call, and from where.

fedray runs code only when the user names it in the config given on the command line
(a dotted path `package.module:attr`). Files fedray reads back (a run directory's
config.yaml and config.resume-N.yaml, checkpoints, watermark key files) are data: a
dotted path in a run directory's config is refused unless the user names it again with
`--allow-code` (`AllowCode`), and checkpoints and key files never name code at all.

Whatever its source, a dotted path reaches a builder only if it is a function or class
defined outside the standard library and outside `DENIED_MODULES` (checked on the name
before anything is imported, and on the object's own module after), so `os:system`,
`subprocess:run` or `builtins:eval` are config errors and nothing is called.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
from typing import Any, Iterable, Mapping

from fedray.config.errors import ConfigError

DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
"""A dotted path as configs write it: `package.module:attr` (identifiers only)."""

DENIED_MODULES = frozenset({
    # the standard library is refused as a whole (sys.stdlib_module_names); listed for the
    # record are the ones an attacker reaches for first
    "os", "posix", "nt", "subprocess", "builtins", "sys", "shutil", "importlib", "pickle", "marshal",
    "ctypes", "socket", "runpy", "code", "pty", "multiprocessing",
    # third-party code that loads pickles, runs code or spawns processes
    "dill", "cloudpickle", "joblib", "yaml", "ray", "pip", "setuptools", "IPython",
    "torch.serialization", "torch.hub", "torch.package", "torch.jit", "pandas.io.pickle", "numpy.lib",
    # fedray's own command line: a config must not re-enter it
    "fedray.__main__", "fedray.cli",
})
"""Modules (and their submodules) no dotted path may reach, besides the standard library."""


def is_dotted(text: Any) -> bool:
    """Whether a config value is a dotted path to code."""
    return isinstance(text, str) and DOTTED.match(text) is not None


def module_refusal(module_name: str) -> str | None:
    """Why a module may not provide a builder (None: it may)."""
    top = module_name.split(".", 1)[0]
    if top in sys.stdlib_module_names:
        return f"module '{module_name}' is part of Python's standard library"
    for denied in DENIED_MODULES:
        if module_name == denied or module_name.startswith(denied + "."):
            return f"module '{module_name}' is in fedray's denied set ({denied})"
    return None


def target_refusal(found: Any) -> str | None:
    """Why an imported object may not be called as a builder (None: it may): it must be a
    Python function or class, itself defined in a module `module_refusal` accepts (so
    `mymodule:system` after `from os import system` is refused too)."""
    if not (inspect.isfunction(found) or inspect.isclass(found)):
        return f"it is a {type(found).__name__}, not a function or class"
    where = getattr(found, "__module__", None)
    if not isinstance(where, str):
        return "it names no module it was defined in"
    return module_refusal(where)


def config_tree(cfg: Any) -> Any:
    """A config (dataclasses, mappings, lists) as plain dicts, lists and values, enums by
    name: what `OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)` gives,
    without building OmegaConf's nodes, which costs ~0.1 s of CPU for a `RunConfig` on the
    driver's and the server actor's way to their first round (`StateTypes.of`)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_tree(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if f.metadata.get("omegaconf_ignore") is not True}
    if isinstance(cfg, Mapping):
        return {_name(key): config_tree(value) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_tree(value) for value in cfg]
    return _name(cfg)


def _name(value: Any) -> Any:
    return value.name if isinstance(value, enum.Enum) else value


def code_paths(tree: Any, prefix: str = "") -> dict[str, str]:
    """Config key -> dotted path, for every value in a config tree (a dict of dicts and
    lists, component args included) that names code."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(code_paths(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            out.update(code_paths(value, f"{prefix}[{i}]"))
    elif is_dotted(tree):
        out[prefix] = tree
    return out


class AllowCode:
    """The code paths a user vouches for on the command line (`--allow-code`, repeatable):
    a module (`examples.custom_algorithm.algorithm`, which covers its submodules and every
    attribute) or one path (`examples.custom_algorithm.algorithm:damp_spikes`)."""

    def __init__(self, patterns: Iterable[str] = ()):
        self.patterns = tuple(patterns)

    def covers(self, path: str) -> bool:
        module = path.partition(":")[0]
        return any(path == p or module == p or module.startswith(p + ".") for p in self.patterns)

    def check(self, cfg: Any, source: str) -> None:
        """ConfigError naming every key of `cfg` (read back from `source`, a file the user did
        not give on this command line) whose dotted path is not covered."""
        refused = {k: p for k, p in code_paths(config_tree(cfg)).items() if not self.covers(p)}
        if refused:
            listed = ", ".join(f"{k} = {p}" for k, p in refused.items())
            flags = " ".join(f"--allow-code {m}" for m in sorted({p.partition(':')[0] for p in refused.values()}))
            raise ConfigError([f"{listed}: this configuration names code, and it was read back from a "
                               "file fedray wrote, not given on the command line; fedray runs code only "
                               f"when you name it. If you trust that code, pass {flags}"], source)
