"""The explicit table of classes a checkpoint may construct: fedray's state types and a run's plug-ins'.

A checkpoint names the class of each record it holds (`module:qualname`). The loader
never imports what a file names: it looks the name up in `StateTypes`, which holds
fedray's own state classes (`FEDRAY_STATE_TYPES`, written out here, imported from
this table only) and the classes the run's plug-ins declare. The writer uses the same
table, so a state no run could load back is an error when it is saved, not on resume.

A plug-in (a factory given by dotted path in the run's config) declares the state
classes it returns in a `state_types` attribute, a tuple of NamedTuple, dataclass or
enum classes:

    def damp_spikes(limit: float = 3.0) -> UpdateTransform: ...
    damp_spikes.state_types = (SpikeState,)
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from typing import Any, Iterable

FEDRAY_STATE_TYPES: frozenset[str] = frozenset({
    # the server state and what it holds
    "fedray.server.state:ServerState",
    "fedray.server.buffered:InFlight",
    "fedray.selection.profiles:ClientProfiles",
    "fedray.selection.profiles:Outcome",
    "fedray.selection.oort:OortState",
    "fedray.selection.pareto:FrontPoint",
    "fedray.types:ClientResult",
    "fedray.types:FailureKind",
    "fedray.types:StateRef",
    "fedray.types:PendingRef",
    "fedray.client.store:Pending",
    "fedray.types:ParamSpec",
    "fedray.types:Context",
    "fedray.hetero.simulation:Timing",
    "fedray.hetero.simulation:Admission",
    # transform, term and aggregator state
    "fedray.transforms:MomentumState",
    "fedray.transforms:AdamState",
    "fedray.transforms:AdaptiveState",
    "fedray.strategy.algorithm:KeptState",
    "fedray.strategy.terms:LocalRound",
    "fedray.strategy.exchange:Send",
    "fedray.strategy.exchange:Fold",
    "fedray.lifecycle.continual.methods:EwcState",
    "fedray.lifecycle.continual.methods:ReplayState",
    "fedray.lifecycle.continual.methods:AnchorState",
    "fedray.foundation.distill:TopK",
    # privacy: clipping, accounting, secure aggregation
    "fedray.privacy.clip:ClipState",
    "fedray.privacy.dpsgd:Account",
    "fedray.privacy.accountant:Sampling",
    "fedray.privacy.mechanism:Participation",
    "fedray.privacy.mechanism:Budget",
    "fedray.privacy.secagg.messages:Params",
    "fedray.privacy.secagg.messages:MaskedInput",
    "fedray.privacy.secagg.shamir:Share",
    # encoded updates of clients in flight (async mode)
    "fedray.compress.quantize:Int8Blocks",
    "fedray.compress.quantize:QSGDPayload",
    "fedray.compress.quantize:SignPayload",
    "fedray.compress.sparsify:Sparse",
    "fedray.compress.sparsify:Values",
    "fedray.compress.content:Part",
    "fedray.compress.content:ContentPayload",
    "fedray.compress.gain:Rows",
    "fedray.compress.gain:GainPayload",
    "fedray.compress.downlink:Broadcast",
})
"""fedray's own classes that may appear in a checkpoint, as `module:qualname`."""


def qualified(cls: type) -> str:
    """`module:qualname`, as a checkpoint names a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_record_type(obj: Any) -> bool:
    """A NamedTuple, dataclass or enum class: built from data only."""
    return isinstance(obj, type) and (
        (issubclass(obj, tuple) and hasattr(obj, "_fields")) or dataclasses.is_dataclass(obj)
        or issubclass(obj, enum.Enum))


class StateTypes:
    """The classes one run's checkpoints may hold: fedray's table plus `plugins`."""

    def __init__(self, plugins: Iterable[type] = ()):
        self._plugins: dict[str, type] = {}
        for cls in plugins:
            if not is_record_type(cls):
                raise ValueError(f"state_types: {cls!r} is not a NamedTuple, dataclass or enum class")
            self._plugins[qualified(cls)] = cls

    def resolve(self, name: Any) -> type:
        """The class `name` stands for; ValueError if it is in neither table (nothing imported)."""
        if isinstance(name, str) and name in self._plugins:
            return self._plugins[name]
        if not isinstance(name, str) or name not in FEDRAY_STATE_TYPES:
            raise ValueError(f"it names {name!r}, which is not a state type of this run "
                             "(fedray's own, or one a plug-in in its config declares in `state_types`)")
        module_name, _, qualname = name.partition(":")
        return getattr(importlib.import_module(module_name), qualname)

    def allows(self, cls: type) -> bool:
        name = qualified(cls)
        return self._plugins.get(name) is cls or name in FEDRAY_STATE_TYPES

    @classmethod
    def of(cls, cfg: Any) -> "StateTypes":
        """fedray's table plus the `state_types` every plug-in in `cfg` (a config the user
        gave, or allowed with --allow-code) declares; ValueError naming the config key of
        a declaration that is not a tuple of record classes."""
        from fedray.config.registry import import_user_code
        from fedray.config.trust import code_paths, config_tree

        found: list[type] = []
        for key, path in code_paths(config_tree(cfg)).items():
            try:
                factory = import_user_code(path, key)
            except ValueError:  # not code after all (a value in some args): building reports real misses
                continue
            declared = getattr(factory, "state_types", ())
            if not isinstance(declared, tuple) or not all(is_record_type(c) for c in declared):
                raise ValueError(f"{key}: {path}.state_types must be a tuple of NamedTuple, dataclass or "
                                 f"enum classes, got {declared!r}")
            found += declared
        return cls(found)


FEDRAY_ONLY = StateTypes()
"""fedray's table alone (a run whose config names no plug-in)."""
