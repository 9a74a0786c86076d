"""Owners' watermark keys: small JSON files holding a secret, written outside the run directory.

A key names its scheme and the scheme's arguments, its owner (a client id), a
128-bit secret drawn from the operating system's entropy (`secrets`), never from
the run's seed, which is in config.yaml for anyone to read, and the `layout` the
scheme derived from the model (e.g. which parameters carry the bits). Everything
secret (projection matrices, bit strings, trigger inputs) is regenerated from the
secret by `key_rng`, so the file stays a few hundred bytes whatever the model.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

KEY_FORMAT = 1


def key_path(folder: str | os.PathLike, owner: int) -> Path:
    """Where the key of client `owner` lives in the keys folder."""
    return Path(folder) / f"client_{owner}.json"


def new_key(scheme: str, args: dict, owner: int, layout: dict) -> dict[str, Any]:
    """A fresh key of `owner` for `scheme(**args)` on a model of this `layout`."""
    return {"fedray_watermark": KEY_FORMAT, "scheme": scheme, "args": as_json(args), "owner": int(owner),
            "secret": secrets.token_hex(16), "layout": as_json(layout)}


def key_rng(key: dict, purpose: str) -> np.random.Generator:
    """A generator seeded from the key's secret and `purpose` (the same on every call)."""
    return np.random.default_rng([int(key["secret"], 16), zlib.crc32(purpose.encode())])


def write_key(path: str | os.PathLike, key: dict) -> Path:
    """Write atomically, readable by the owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(key, fh, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def read_key(path: str | os.PathLike) -> dict[str, Any]:
    """A key file; ValueError saying what is wrong with a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"key file {path} does not exist")
    try:
        key = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a fedray watermark key: {err}") from None
    missing = [k for k in ("fedray_watermark", "scheme", "args", "owner", "secret", "layout")
               if not isinstance(key, dict) or k not in key]
    if missing:
        raise ValueError(f"{path} is not a fedray watermark key (it lacks {missing})")
    if key["fedray_watermark"] != KEY_FORMAT:
        raise ValueError(f"{path}: key format {key['fedray_watermark']}, this fedray reads {KEY_FORMAT}")
    problems = _field_problems(key)
    if problems:
        raise ValueError(f"{path} is not a valid fedray watermark key: {'; '.join(problems)}")
    return key


def _field_problems(key: dict) -> list[str]:
    """What is wrong with a key's fields: a key file is data, so every field must have its
    type (the scheme a name, its args a mapping of names to JSON values)."""
    out = []
    if not isinstance(key["scheme"], str):
        out.append(f"'scheme' must be a scheme name, got {key['scheme']!r}")
    args = key["args"]
    if not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args):
        out.append(f"'args' must be a mapping of argument names to values, got {args!r}")
    if isinstance(key["owner"], bool) or not isinstance(key["owner"], int) or key["owner"] < 0:
        out.append(f"'owner' must be a client id, got {key['owner']!r}")
    secret = key["secret"]
    if not (isinstance(secret, str) and len(secret) == 32 and all(c in "0123456789abcdef" for c in secret)):
        out.append("'secret' must be 32 lowercase hex digits")
    if not isinstance(key["layout"], dict):
        out.append(f"'layout' must be a mapping, got {type(key['layout']).__name__}")
    return out


def as_json(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so a key compares equal after a round trip."""
    return json.loads(json.dumps(value))
