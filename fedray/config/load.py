"""Load a run config: schema defaults <- YAML file <- `key=value` overrides."""

from __future__ import annotations

import os
from typing import Iterable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedray.config.errors import ConfigError
from fedray.config.schema import RunConfig


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> RunConfig:
    """Merge and check a config; raise ConfigError naming every bad key and the file."""
    source = str(path) if path is not None else "<defaults>"
    merged = OmegaConf.structured(RunConfig)
    problems: list[str] = []
    if path is not None:
        merged = _merge_file(merged, source, problems)
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
    if problems:
        raise ConfigError(problems, source)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, as written to the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def override_value(value: object) -> str:
    """A value as the right-hand side of a `key=value` override (`0.1`, `true`, `[64, 64]`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def _merge_file(base: DictConfig, path: str, problems: list[str]) -> DictConfig:
    if not os.path.isfile(path):
        problems.append(f"config file not found: {path}")
        return base
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        problems.append(f"not valid YAML: {err}")
        return base
    if raw is None:
        return base
    if not isinstance(raw, dict):
        problems.append(f"the top level must be a mapping of sections, got {type(raw).__name__}")
        return base
    return _merge_tree(base, (), raw, problems)


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
    try:
        return OmegaConf.merge(base, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        problems.append(f"override {item!r}: {_describe(err)}")
        return base


def _describe(err: OmegaConfBaseException) -> str:
    """`key: reason` from omegaconf's multi-line message."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    key = getattr(err, "full_key", None)
    if isinstance(err, OmegaConfBaseException) and "not in" in reason and "Key '" in reason:
        reason = "unknown key"
    return f"{key}: {reason}" if key else reason
