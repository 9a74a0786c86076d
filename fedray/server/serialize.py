"""The server state as safetensors plus JSON: a checkpoint format that cannot run code.

A pickle runs whatever code its bytes name when it is loaded, so resuming from a
tampered run directory (shared storage, `s3://`) would execute an attacker's code.
Here a checkpoint is one safetensors file: every array (numpy arrays, and torch
tensors such as optimizer moments) is a tensor named by its place in the state,
and everything else is one JSON document in the file's header metadata. JSON
gives back only data; the only classes ever constructed are NamedTuples,
dataclasses and enums defined in fedray's own modules, with data as arguments.

Loading validates before it builds anything: the format version, that the header
and JSON parse, that every array the JSON names is in the file with its recorded
dtype and shape and no tensor is left over, and that the top level is a
`ServerState` with exactly its fields. Any failure is a `CheckpointError` naming
the file. Floats are written at full precision and integers exactly (generator
states), so a resumed run is bit-identical.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import struct
from typing import Any

import numpy as np

FORMAT = "fedray-checkpoint/1"
_META = "fedray_state"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read (corrupt, truncated, tampered)."""

    def __init__(self, where: Any, reason: str):
        super().__init__(f"checkpoint {where} cannot be loaded: {reason}")
        self.where = self.path = where
        self.reason = reason


# ---- writing ----------------------------------------------------------------------------


def encode(state: Any) -> bytes:
    """The state as one safetensors file's bytes (arrays as tensors, the rest as JSON)."""
    from safetensors.torch import save

    tensors: dict[str, Any] = {}
    tree = _encode(state, "state", tensors)
    document = json.dumps({"format": FORMAT, "state": tree}, allow_nan=True, separators=(",", ":"))
    return save(tensors, metadata={_META: document})


def _encode(value: Any, path: str, tensors: dict) -> Any:
    import torch

    if isinstance(value, np.generic):  # before float: np.float64 is a float, and keeps its type
        return {"__scalar__": value.dtype.str, "value": value.item()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": _qualified(type(value)), "value": _encode(value.value, path, tensors)}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__objects__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value.tolist())]}
        tensors[path] = torch.from_numpy(np.array(value, copy=True, order="C"))
        return {"__array__": path, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path, "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple
        return {"__record__": _qualified(type(value)),
                "fields": {f: _encode(getattr(value, f), f"{path}/{f}", tensors) for f in value._fields}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__record__": _qualified(type(value)),
                "fields": {f.name: _encode(getattr(value, f.name), f"{path}/{f.name}", tensors)
                           for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, path, tensors), _encode(v, f"{path}/{k}", tensors)]
                             for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    raise TypeError(f"cannot checkpoint a {type(value).__name__} (at {path})")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# ---- reading ------------------------------------------------------------------------------


def decode(data: bytes, where: Any, expected: type | None = None) -> Any:
    """The state in `data` (a checkpoint file's bytes); CheckpointError naming `where`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    document = _document(data, where)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(where, f"its tensors are corrupt ({err})") from None
    used: set[str] = set()
    try:
        state = _decode(document["state"], tensors, used)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(where, str(err)) from None
    left = sorted(set(tensors) - used)
    if left:
        raise CheckpointError(where, f"it holds tensors its state does not name: {left[:5]}")
    if expected is not None:
        _check_fields(state, expected, where)
    return state


def _document(data: bytes, where: Any) -> dict:
    """The JSON document in the safetensors header, parsed and checked for its version."""
    if len(data) < 8:
        raise CheckpointError(where, f"it is {len(data)} bytes long (truncated)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise CheckpointError(where, "its header runs past the end of the file (truncated, or not a checkpoint)")
    try:
        header = json.loads(data[8 : 8 + size])
        document = json.loads(header["__metadata__"][_META])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(where, f"it has no readable fedray state in its header ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(where, f"format {document.get('format') if isinstance(document, dict) else None!r}, "
                                     f"expected {FORMAT!r}")
    return document


def _decode(node: Any, tensors: dict, used: set) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, used) for v in node]
    if not isinstance(node, dict) or len(node) == 0:
        raise ValueError(f"unexpected JSON value {node!r}")
    tag = next(iter(node))
    if tag in ("__array__", "__tensor__"):
        return _array(node, tensors, used)
    if tag == "__record__":
        cls = _allowed_class(node["__record__"])
        fields = {k: _decode(v, tensors, used) for k, v in node["fields"].items()}
        return cls(**fields)
    if tag == "__tuple__":
        return tuple(_decode(v, tensors, used) for v in node["__tuple__"])
    if tag == "__dict__":
        return {_hashable(_decode(k, tensors, used)): _decode(v, tensors, used) for k, v in node["__dict__"]}
    if tag == "__scalar__":
        return np.dtype(node["__scalar__"]).type(node["value"])
    if tag == "__objects__":
        out = np.empty(len(node["__objects__"]), dtype=object)
        out[:] = [_decode(v, tensors, used) for v in node["__objects__"]]
        return out
    if tag == "__enum__":
        return _allowed_class(node["__enum__"])(_decode(node["value"], tensors, used))
    if tag == "__bytes__":
        return bytes.fromhex(node["__bytes__"])
    raise ValueError(f"unknown tag {tag!r}")


def _array(node: dict, tensors: dict, used: set) -> Any:
    name = node.get("__array__", node.get("__tensor__"))
    if name not in tensors:
        raise ValueError(f"array {name!r} is missing from the file")
    if name in used:
        raise ValueError(f"array {name!r} is named twice")
    used.add(name)
    tensor = tensors[name]
    if list(tensor.shape) != list(node["shape"]):
        raise ValueError(f"array {name!r} has shape {list(tensor.shape)}, its state says {node['shape']}")
    if "__tensor__" in node:
        if str(tensor.dtype).removeprefix("torch.") != node["dtype"]:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, its state says {node['dtype']}")
        return tensor
    array = tensor.numpy()
    if array.dtype != np.dtype(node["dtype"]):
        raise ValueError(f"array {name!r} has dtype {array.dtype}, its state says {node['dtype']}")
    return array


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _allowed_class(qualified: str) -> type:
    """A NamedTuple, dataclass or enum defined in fedray: nothing else is ever built."""
    module_name, _, qualname = str(qualified).partition(":")
    if not (module_name == "fedray" or module_name.startswith("fedray.")) or not qualname:
        raise ValueError(f"it names {qualified!r}, which is not a fedray record")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ValueError(f"it names {qualified!r}, which does not exist") from None
    ok = isinstance(obj, type) and (
        (issubclass(obj, tuple) and hasattr(obj, "_fields")) or dataclasses.is_dataclass(obj)
        or issubclass(obj, enum.Enum))
    if not ok:
        raise ValueError(f"it names {qualified!r}, which is not a record type")
    return obj


def _check_fields(state: Any, expected: type, where: Any) -> None:
    if type(state) is not expected:
        raise CheckpointError(where, f"it holds a {type(state).__name__}, not a {expected.__name__}")
    names = {f.name for f in dataclasses.fields(expected)}
    encoded = set(vars(state))
    if names != encoded:
        raise CheckpointError(where, f"its fields differ from {expected.__name__}'s: {sorted(names ^ encoded)}")
