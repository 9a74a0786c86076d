"""Typed run configuration: schema, loading (defaults <- YAML <- overrides), registries."""

from fedray.config.errors import ConfigError
from fedray.config.load import load_config, to_yaml
from fedray.config.schema import RunConfig

__all__ = ["ConfigError", "RunConfig", "load_config", "to_yaml"]
