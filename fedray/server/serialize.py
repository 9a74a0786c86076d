"""The server state as safetensors plus JSON: a checkpoint format that cannot run code.

A pickle runs whatever code its bytes name when it is loaded, so resuming from a
tampered run directory (shared storage, `s3://`) would execute an attacker's code.
Here a checkpoint is one safetensors file: every array (numpy arrays, and torch
tensors such as optimizer moments) is a tensor named by its place in the state,
and everything else is one JSON document in the file's header metadata. JSON
gives back only data; the only classes ever constructed are those in the run's
explicit table (`fedray.server.state_types.StateTypes`: fedray's state classes and
those its plug-ins declare), with data as arguments; no module a file names is
ever imported.

Each file carries a SHA-256 digest of its content (the JSON document, then every
tensor's name, dtype, shape and bytes, in name order) in its metadata, so a single
flipped bit is found. Loading validates before it builds anything: the format
version, the header's size, depth and numbers, the digest, that every array the
JSON names is in the file with its recorded dtype and shape and no tensor is left
over, and that the top level is the expected type with exactly its fields. Any
failure is a `CheckpointError` naming the file. Floats are written at full
precision and integers exactly (generator states), so a resumed run is
bit-identical.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import struct
from typing import Any

import numpy as np

from fedray.server.state_types import FEDRAY_ONLY, StateTypes, qualified

FORMAT = "fedray-checkpoint/2"
_META = "fedray_state"
_DIGEST = "fedray_sha256"
MAX_HEADER_BYTES = 64 * 2**20
"""A larger header is not a checkpoint fedray wrote (safetensors itself stops at 100 MB)."""
MAX_DEPTH = 64
"""Nesting of the JSON document: a state is a few levels of records and containers."""
MAX_INT_BITS = 256
"""Integers of a state are counts, ids and generator states (128 bits at most)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read (corrupt, truncated, tampered)."""

    def __init__(self, where: Any, reason: str):
        super().__init__(f"checkpoint {where} cannot be loaded: {reason}")
        self.where = self.path = where
        self.reason = reason


# ---- writing ----------------------------------------------------------------------------


def encode(state: Any, types: StateTypes = FEDRAY_ONLY) -> bytes:
    """The state as one safetensors file's bytes (arrays as tensors, the rest as JSON, and
    their digest). TypeError for a value no run could load back: a record class outside
    `types`, a function, any object that is not data."""
    from safetensors.torch import save

    tensors: dict[str, Any] = {}
    tree = _encode(state, "state", tensors, types)
    document = json.dumps({"format": FORMAT, "state": tree}, allow_nan=True, separators=(",", ":"))
    return save(tensors, metadata={_META: document, _DIGEST: content_digest(document, tensors)})


def content_digest(document: str, tensors: dict) -> str:
    """SHA-256 of the JSON document and every tensor (name, dtype, shape, bytes) in name order."""
    import torch

    digest = hashlib.sha256(document.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode("utf-8"))
        flat = tensor.reshape(-1)
        if flat.numel():  # (an empty or 1-element tensor may carry any stride: view needs 1)
            flat = flat.as_strided((flat.numel(),), (1,)) if flat.stride(0) != 1 else flat
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _encode(value: Any, path: str, tensors: dict, types: StateTypes = FEDRAY_ONLY) -> Any:
    import torch

    if isinstance(value, np.generic):  # before float: np.float64 is a float, and keeps its type
        return {"__scalar__": value.dtype.str, "value": value.item()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _is_record(value) and not types.allows(type(value)):
        raise TypeError(f"cannot checkpoint a {qualified(type(value))} (at {path}): not a state type of this "
                        "run; a plug-in declares the state classes it returns in `state_types`")
    if isinstance(value, enum.Enum):
        return {"__enum__": _qualified(type(value)), "value": _encode(value.value, path, tensors, types)}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__objects__": [_encode(v, f"{path}/{i}", tensors, types) for i, v in enumerate(value.tolist())]}
        tensors[path] = torch.from_numpy(np.array(value, copy=True, order="C"))
        return {"__array__": path, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path, "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple
        return {"__record__": _qualified(type(value)),
                "fields": {f: _encode(getattr(value, f), f"{path}/{f}", tensors, types) for f in value._fields}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__record__": _qualified(type(value)),
                "fields": {f.name: _encode(getattr(value, f.name), f"{path}/{f.name}", tensors, types)
                           for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors, types) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors, types) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, path, tensors, types), _encode(v, f"{path}/{k}", tensors, types)]
                             for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    raise TypeError(f"cannot checkpoint a {type(value).__name__} (at {path})")


def _qualified(cls: type) -> str:
    return qualified(cls)


def _is_record(value: Any) -> bool:
    return (isinstance(value, enum.Enum) or (isinstance(value, tuple) and hasattr(value, "_fields"))
            or (dataclasses.is_dataclass(value) and not isinstance(value, type)))


# ---- reading ------------------------------------------------------------------------------


def decode(data: bytes, where: Any, expected: type | None = None, types: StateTypes = FEDRAY_ONLY) -> Any:
    """The state in `data` (a checkpoint file's bytes), built only from classes in `types`;
    CheckpointError naming `where` and the reason."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    text, document, digest = _document(data, where)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(where, f"its tensors are corrupt ({err})") from None
    if content_digest(text, tensors) != digest:
        raise CheckpointError(where, "its content does not match the SHA-256 digest it was written with "
                                     "(changed since: a flipped bit, a partial copy, an edit)")
    used: set[str] = set()
    try:
        state = _decode(document["state"], tensors, used, types)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
        raise CheckpointError(where, str(err)) from None
    left = sorted(set(tensors) - used)
    if left:
        raise CheckpointError(where, f"it holds tensors its state does not name: {left[:5]}")
    if expected is not None:
        _check_fields(state, expected, where)
    return state


def _document(data: bytes, where: Any) -> tuple[str, dict, str]:
    """(the JSON document's text, the document, the recorded digest) from the safetensors
    header, checked for size, nesting, number sizes and version before anything else."""
    if len(data) < 8:
        raise CheckpointError(where, f"it is {len(data)} bytes long (truncated)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise CheckpointError(where, "its header runs past the end of the file (truncated, or not a checkpoint)")
    if size > MAX_HEADER_BYTES:
        raise CheckpointError(where, f"its header is {size} bytes, more than a checkpoint's {MAX_HEADER_BYTES}")
    try:
        header = json.loads(data[8 : 8 + size])
        metadata = header["__metadata__"]
        text, digest = metadata[_META], metadata.get(_DIGEST)
        document = json.loads(text)
    except RecursionError:
        raise CheckpointError(where, f"its header is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, KeyError, TypeError, OverflowError) as err:
        raise CheckpointError(where, f"it has no readable fedray state in its header ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(where, f"format {document.get('format') if isinstance(document, dict) else None!r}, "
                                     f"expected {FORMAT!r}")
    if not isinstance(digest, str):
        raise CheckpointError(where, "it carries no digest of its content")
    problem = _shape_problem(document)
    if problem:
        raise CheckpointError(where, problem)
    return text, document, digest


def _shape_problem(document: Any) -> str | None:
    """Nesting deeper than MAX_DEPTH or an integer wider than MAX_INT_BITS (walked without
    recursion, so a hostile document cannot exhaust the stack)."""
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"its header is nested more than {MAX_DEPTH} levels deep"
        if isinstance(node, dict):
            stack += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, depth + 1) for v in node]
        elif isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > MAX_INT_BITS:
            return f"its header holds an integer of {node.bit_length()} bits (at most {MAX_INT_BITS})"
    return None


_NUMBER_KINDS = "biufc"
"""dtype kinds a scalar may have: bool, signed and unsigned integers, floats, complex."""


def _decode(node: Any, tensors: dict, used: set, types: StateTypes) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, used, types) for v in node]
    if not isinstance(node, dict) or len(node) == 0:
        raise ValueError(f"unexpected JSON value {node!r}")
    tag = next(iter(node))
    if tag in ("__array__", "__tensor__"):
        return _array(node, tensors, used)
    if tag == "__record__":
        cls = types.resolve(node["__record__"])
        fields = {k: _decode(v, tensors, used, types) for k, v in node["fields"].items()}
        return cls(**fields)
    if tag == "__tuple__":
        return tuple(_decode(v, tensors, used, types) for v in node["__tuple__"])
    if tag == "__dict__":
        return {_hashable(_decode(k, tensors, used, types)): _decode(v, tensors, used, types) for k, v in node["__dict__"]}
    if tag == "__scalar__":
        dtype = np.dtype(node["__scalar__"])
        if dtype.kind not in _NUMBER_KINDS:
            raise ValueError(f"a scalar of dtype {dtype} is not a number")
        return dtype.type(node["value"])
    if tag == "__objects__":
        out = np.empty(len(node["__objects__"]), dtype=object)
        out[:] = [_decode(v, tensors, used, types) for v in node["__objects__"]]
        return out
    if tag == "__enum__":
        return types.resolve(node["__enum__"])(_decode(node["value"], tensors, used, types))
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


def _check_fields(state: Any, expected: type, where: Any) -> None:
    if type(state) is not expected:
        raise CheckpointError(where, f"it holds a {type(state).__name__}, not a {expected.__name__}")
    names = {f.name for f in dataclasses.fields(expected)}
    encoded = set(vars(state))
    if names != encoded:
        raise CheckpointError(where, f"its fields differ from {expected.__name__}'s: {sorted(names ^ encoded)}")
