"""One small registry per kind of component, so config names map to builders in one place."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps a config name to a builder; a dotted path `pkg.module:attr` reaches user code."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or _looks_dotted(name)

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        if _looks_dotted(name):
            return _import_dotted(name, self.kind)
        raise ValueError(
            f"Unknown {self.kind} '{name}'; choose one of {self.names()} "
            "or give a dotted path 'package.module:attribute'"
        )

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)


def _looks_dotted(name: str) -> bool:
    return ":" in name


def _import_dotted(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot load {kind} from '{path}': {exc}") from None
