"""One small registry per kind of component, so config names map to builders in one place.

A component in a config is a registered name or a dotted path `package.module:attr`
to user code. Before a builder is called its signature is checked against what it
will be given (the framework's positional arguments and the user's `args`), and
after it returns its result is checked against what the kind must produce, so a
dotted path to the wrong kind of object (`os:getcwd` as a strategy) is a clear
config error at validate time, never a traceback in the middle of a run.

A dotted path is checked before anything is called (`fedray.config.trust`): its module
must not be in the standard library or the denied set (checked before it is imported),
and the object must be a function or class defined outside them, whose signature
accepts what it will be given. Otherwise nothing is called and the error names the path.
"""

from __future__ import annotations

import importlib
import inspect
import math
import typing
from types import UnionType
from typing import Any, Callable, Generic, Mapping, NamedTuple, TypeVar

from fedray.config.trust import is_dotted, module_refusal, target_refusal

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps a config name to a builder; a dotted path `pkg.module:attr` reaches user code.

    `returns`: the type (or runtime-checkable Protocol) every builder must return;
    `build` checks it, for registered builders and user code alike.
    """

    def __init__(self, kind: str, returns: type | tuple[type, ...] | None = None):
        self.kind = kind
        self.returns = returns
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = builder
            return builder

        return decorator

    def register_lazy(self, name: str, path: str) -> None:
        """Register `name` as the builder at dotted `path`, imported on first use: a
        builder whose module needs torch stays out of processes that only check configs."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = _Lazy(path)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or _looks_dotted(name)

    def get(self, name: str, code: bool = True) -> T:
        """The builder of `name`; ValueError if it is unknown, cannot be imported or is not
        a factory fedray may call (`fedray.config.trust`). `code=False`: registered names
        only (for names read from files fedray did not get from the user)."""
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, _Lazy):
                entry = self._entries[name] = _import_dotted(entry.path, self.kind)
            return entry
        if code and _looks_dotted(name):
            return import_user_code(name, self.kind)
        if not code:
            raise ValueError(f"Unknown {self.kind} '{name}'; choose one of {self.names()}")
        raise ValueError(
            f"Unknown {self.kind} '{name}'; choose one of {self.names()} "
            "or give a dotted path 'package.module:attribute'"
        )

    def check_call(self, name: str, *args: Any, **kwargs: Any) -> Callable:
        """The builder, after checking that it accepts these arguments (types of keyword
        arguments included, where the builder annotates them); ValueError naming the
        unknown, missing or mistyped ones."""
        return self._checked(name, args, kwargs)[0]

    def _checked(self, name: str, args: tuple, kwargs: dict) -> tuple[Callable, dict]:
        """(builder, keyword arguments converted to the annotated number types)."""
        builder = self.get(name)
        try:
            signature = inspect.signature(builder)
        except (TypeError, ValueError):  # no signature (a C builtin): registered ones only
            if name not in self._entries:
                raise ValueError(f"{self.kind} '{name}' has no signature to check its arguments "
                                 "against, so fedray does not call it") from None
            return builder, kwargs
        problems = _binding_problems(signature, args, kwargs)
        converted, type_problems = _typed(builder, kwargs)
        problems += type_problems
        if problems:
            takes = ", ".join(p for p in signature.parameters if p not in ("self",)) or "nothing"
            raise ValueError(f"{self.kind} '{name}': {'; '.join(problems)} (it takes: {takes})")
        return builder, converted

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Check the call, build, check the result's kind. User code (a dotted path) that
        raises while building is reported as a config error naming it."""
        builder, kwargs = self._checked(name, args, kwargs)
        if name in self._entries:
            built = builder(*args, **kwargs)
        else:
            try:
                built = builder(*args, **kwargs)
            except (TypeError, AttributeError, ValueError) as err:
                raise ValueError(f"{self.kind} '{name}' failed: {type(err).__name__}: {err}") from None
        if self.returns is not None and not isinstance(built, self.returns):
            want = (self.returns,) if isinstance(self.returns, type) else self.returns
            missing = _missing_members(built, want)
            raise ValueError(f"{self.kind} '{name}' returned a {type(built).__name__}, "
                             + (missing or "expected " + " or ".join(t.__name__ for t in want)))
        return built

    def build_component(self, key: str, component: Any, *args: Any) -> Any:
        """Build a `{name, args}` config section (`ComponentConfig`); ValueError messages
        start with the config key, e.g. `server.aggregator: ...`."""
        try:
            return self.build(component.name, *args, **dict(component.args))
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None


def _binding_problems(signature: inspect.Signature, args: tuple, kwargs: Mapping[str, Any]) -> list[str]:
    params = signature.parameters
    takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    problems = []
    if not takes_var_kw:
        named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        problems += [f"unknown argument '{k}'" for k in kwargs if k not in named]
    if problems:
        return problems
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        text = str(err)
        if "missing a required argument" in text:
            return [f"needs argument {text.split(':', 1)[1].strip()}"]
        return [f"cannot be called with {len(args)} positional argument(s)"
                + (f" and {sorted(kwargs)}" if kwargs else "") + f": {text}"]
    return []


_SIMPLE = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}


def _typed(builder: Callable, kwargs: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Keyword values checked against simple annotations (float, int, bool, str, Optional
    of them). A number written as text (`inf`, `1e-3` read by YAML as a string) becomes
    the number; numbers must be finite."""
    try:
        hints = typing.get_type_hints(builder)
    except Exception:  # noqa: BLE001 - unresolvable annotations in user code: nothing to check
        return dict(kwargs), []
    converted, problems = dict(kwargs), []
    for key, value in kwargs.items():
        hint = hints.get(key)
        allowed = _allowed_types(hint)
        if allowed is None or (value is None and type(None) in allowed):
            continue
        if isinstance(value, str) and float in allowed:
            try:
                value = converted[key] = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) and bool not in allowed:
            ok = False
        else:
            ok = isinstance(value, tuple(t for t in allowed if t is not type(None)))
        if not ok:
            problems.append(f"argument '{key}' must be {_describe(hint)}, got {value!r}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"argument '{key}' must be a finite number, got {value}")
    return converted, problems


def _allowed_types(hint: Any) -> tuple[type, ...] | None:
    if hint in _SIMPLE:
        return _SIMPLE[hint]
    if typing.get_origin(hint) in (typing.Union, UnionType):
        members = typing.get_args(hint)
        if all(m in _SIMPLE or m is type(None) for m in members):
            out: tuple[type, ...] = ()
            for m in members:
                out += _SIMPLE.get(m, (type(None),))
            return out
    return None


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class _Lazy(NamedTuple):
    """A registered builder not imported yet (`Registry.register_lazy`)."""

    path: str


def _looks_dotted(name: str) -> bool:
    return is_dotted(name)


def _missing_members(built: Any, protocols: tuple[type, ...]) -> str | None:
    """`missing member 'result' of Aggregator` for a result that fails a Protocol check."""
    for proto in protocols:
        if not getattr(proto, "_is_protocol", False):
            continue
        members = [m for m in sorted(set(vars(proto)) | set(getattr(proto, "__annotations__", {})))
                   if not m.startswith("_")]
        absent = [m for m in members if not hasattr(built, m)]
        if absent:
            return ", ".join(f"missing member '{m}'" for m in absent) + f" of {proto.__name__}"
    return None


def import_user_code(path: str, kind: str) -> Any:
    """The object at a user's dotted path, refused (ValueError naming it) before import if
    its module may not provide code, and after if it is not a function or class of such a
    module."""
    refusal = module_refusal(path.partition(":")[0])
    if refusal is None:
        found = _import_dotted(path, kind)
        refusal = target_refusal(found)
    if refusal is not None:
        raise ValueError(f"{kind} '{path}' is not a factory fedray may call: {refusal}")
    return found


def _import_dotted(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot load {kind} from '{path}': {exc}") from None
