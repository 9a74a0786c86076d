"""`{name, args}` sections: a pluggable component named in the config and the
keyword arguments of its factory."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Dict


@dataclasses.dataclass
class ComponentConfig:
    """A pluggable piece of the algorithm: a registered name (or a dotted path
    `package.module:factory` to your own) and the keyword arguments of its factory.
    `args` are checked against the factory's signature before the run starts."""

    name: str = ""
    args: Dict[str, Any] = field(default_factory=dict)


def component(name: str, **args: Any) -> Any:
    """A default `{name, args}` section (for `field(default_factory=...)`)."""
    return field(default_factory=lambda: ComponentConfig(name, dict(args)))
