"""Load a run config: schema defaults <- YAML file <- `key=value` overrides."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedray.config.errors import ConfigError
from fedray.config.schema import RunConfig
from fedray.config.trust import AllowCode, code_paths

_PASSTHROUGH = ("server.foundation_model.deepspeed",)
"""Sections handed on untouched (DeepSpeed checks its own config); not value-checked here."""

MAX_VALUES = 100_000
"""Most values (mappings, lists and scalars, counting every alias as the copy it makes) a
config may expand to: YAML aliases (`&a` ... `*a`) share one object in PyYAML, but merging
copies each, so a few hundred bytes of nested aliases would otherwise take hours."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a config may have (fedray's own is under 10)."""


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> RunConfig:
    """Merge and check a config; raise ConfigError naming every bad key and the file."""
    if path is None:
        return load_config_text(None, "<defaults>", overrides)
    source = str(path)
    if not os.path.isfile(source):
        raise ConfigError([f"config file not found: {source}"], source)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"cannot read {source}: {err}"], source) from None
    return load_config_text(text, source, overrides)


def load_run_config(path: str | os.PathLike, allow_code: Iterable[str] = (),
                    overrides: Iterable[str] = (), text: str | None = None) -> RunConfig:
    """A config fedray wrote itself (a run directory's config.yaml or config.resume-N.yaml,
    or `text` read from it), with the user's overrides: refused (ConfigError naming key,
    path and file) if it names code the user did not vouch for on this command line, with
    `--allow-code` or an override that gives the same dotted path again."""
    overrides = list(overrides)
    cfg = load_config(path, overrides) if text is None else load_config_text(text, str(path), overrides)
    AllowCode([*allow_code, *_named_code(overrides)]).check(cfg, str(path))
    return cfg


def _named_code(overrides: Iterable[str]) -> list[str]:
    """The dotted paths `key=value` overrides give (in any value: a list of components too)."""
    out: list[str] = []
    for item in overrides:
        try:
            value = yaml.safe_load(item.split("=", 1)[1]) if "=" in item else None
        except yaml.YAMLError:  # not valid YAML: loading the config reports it
            continue
        out += code_paths(value).values()
    return out


def load_config_text(text: str | None, source: str, overrides: Iterable[str] = ()) -> RunConfig:
    """`load_config` for YAML text already read (from `source`, named in messages);
    None: the schema's defaults."""
    overrides = list(overrides)
    merged = OmegaConf.structured(RunConfig)
    problems: list[str] = []
    if text is not None:
        merged = _merge_text(merged, text, source, problems)
    for item in overrides:
        merged = _merge_override(merged, item, problems)
    # Bad keys were skipped above, so the value checks still run on the rest and
    # the user sees every problem at once.
    try:
        cfg = OmegaConf.to_object(merged)
    except ConfigError as err:
        problems += err.problems
    except OmegaConfBaseException as err:
        problems.append(_describe(err))
    problems += [p for p in _value_problems(merged) if not any(q.startswith(p.split(" ", 1)[0]) for q in problems)]
    if problems:
        raise _attributed(problems, source, overrides)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, as written to the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def override_value(value: object) -> str:
    """A value as the right-hand side of a `key=value` override (`0.1`, `true`, `[64, 64]`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: PyYAML would keep the
    last one and silently drop the first (a whole `server:` block, say)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' repeats the one on line {seen[key]}; "
                "YAML would silently keep only the last", key_node.start_mark)
        seen.setdefault(key, line)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _merge_text(base: DictConfig, text: str, source: str, problems: list[str]) -> DictConfig:
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        problems.append(f"not valid YAML: {_yaml_reason(err)}")
        return base
    except RecursionError:  # PyYAML composes nested nodes recursively
        problems.append(f"not valid YAML: nested deeper than {MAX_DEPTH} levels")
        return base
    oversized = _oversized(raw)
    if oversized:
        problems.append(oversized)
        return base
    if raw is None:
        problems.append(f"{source} is empty (no settings); write `{{}}` in it to run on the defaults")
        return base
    if not isinstance(raw, dict):
        problems.append(f"the top level must be a mapping of sections, got {type(raw).__name__}")
        return base
    return _merge_tree(base, (), raw, problems)


def _yaml_reason(err: yaml.YAMLError) -> str:
    """`line N: problem` from PyYAML's multi-line message."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return where + (getattr(err, "problem", None) or str(err).splitlines()[0])


def _oversized(raw: Any) -> str | None:
    """Why `raw` is too deep or expands to too many values, or None. Aliased objects are
    counted once per reference (that is what merging costs), memoised by identity so the
    count itself stays linear in the text."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in sizes:
            children = node.values() if isinstance(node, dict) else node
            total = 1
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_VALUES:
                    raise _TooBig(f"expands to more than {MAX_VALUES:,} values (nested YAML aliases?)")
            sizes[id(node)] = total
        return sizes[id(node)]

    try:
        size(raw, 0)
    except _TooBig as err:
        return f"not a usable config: {err}"
    return None


class _TooBig(Exception):
    """A config past MAX_DEPTH or MAX_VALUES (internal to `_oversized`)."""


def _merge_tree(base: DictConfig, path: tuple, tree: dict, problems: list[str]) -> DictConfig:
    """Merge key by key, descending into a section that fails, so one bad key
    does not hide the problems (or the good values) beside it."""
    for key, value in tree.items():
        nested: dict = {key: value}
        for parent in reversed(path):
            nested = {parent: nested}
        try:
            base = OmegaConf.merge(base, nested)
        except OmegaConfBaseException as err:
            if isinstance(value, dict) and value:
                base = _merge_tree(base, (*path, key), value, problems)
            else:
                problems.append(_describe(err))
    return base


def _merge_override(base: DictConfig, item: str, problems: list[str]) -> DictConfig:
    if "=" not in item:
        problems.append(f"override {item!r} must look like key=value")
        return base
    key, value = item.split("=", 1)
    shown = item if len(item) <= 80 else item[:60] + f"... ({len(item)} characters)"
    try:
        parsed = yaml.load(value, Loader=_StrictLoader) if value.strip() else None  # noqa: S506
    except yaml.YAMLError as err:
        problems.append(f"override {shown!r}: the value of {key.strip()} is not valid YAML "
                        f"({_yaml_reason(err)}); quote it, e.g. {key.strip()}='\"{value[:40]}\"'")
        return base
    except RecursionError:
        problems.append(f"override {shown!r}: nested deeper than {MAX_DEPTH} levels")
        return base
    oversized = _oversized(parsed)
    if oversized:
        problems.append(f"override {shown!r}: {oversized}")
        return base
    try:
        return OmegaConf.merge(base, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        problems.append(f"override {item!r}: {_describe(err)}")
        return base


def _value_problems(merged: DictConfig) -> list[str]:
    """Values no key can take: infinite or NaN numbers (a learning rate of inf passes
    `> 0` and then spoils every update), and strings with NUL bytes (no path may hold one)."""
    try:
        tree = OmegaConf.to_container(merged, enum_to_str=True)
    except OmegaConfBaseException:
        return []
    out: list[str] = []

    def walk(node: Any, key: str) -> None:
        if key in _PASSTHROUGH:
            return
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            out.append(f"{key} must be a finite number, got {node}")
        elif isinstance(node, str) and "\0" in node:
            out.append(f"{key} must not contain a NUL byte, got {node!r}")

    walk(tree, "")
    return out


def _attributed(problems: list[str], source: str, overrides: list[str]) -> ConfigError:
    """Say which problems come from `key=value` overrides (the command line, a sweep's
    grid) rather than from the file."""
    keys = {item.split("=", 1)[0].strip(): item for item in overrides if "=" in item}
    out, from_command_line = [], 0
    for problem in problems:
        items = [item for key, item in keys.items() if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", problem)]
        if problem.startswith("override ") or items:
            from_command_line += 1
        out.append(f"{problem} (set by override {' '.join(items)})" if items and not
                   problem.startswith("override ") else problem)
    if from_command_line == len(problems):
        where = "key=value overrides" + ("" if source == "<defaults>" else f" of {source}")
    elif from_command_line:
        where = f"{source} and its key=value overrides"
    else:
        where = source
    return ConfigError(out, where)


def _describe(err: OmegaConfBaseException) -> str:
    """`key: reason` from omegaconf's multi-line message."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    key = getattr(err, "full_key", None)
    if isinstance(err, OmegaConfBaseException) and "not in" in reason and "Key '" in reason:
        reason = "unknown key"
    return f"{key}: {reason}" if key else reason
