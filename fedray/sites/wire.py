"""What crosses the wire between the server and a site: framed, digested, pickle-free messages.

A message is a value encoded as fedray's checkpoint format (`fedray.server.serialize`:
arrays as safetensors tensors, everything else as JSON, records built only from an
explicit table of classes). Nothing that arrives from the network is unpickled, so a
peer, or anyone between, can send data and only data: a pickle would hand whoever
writes the bytes code execution in the receiving process (docs/guides/trust.md).

On the gRPC stream a message is a header frame (`H` + JSON: kind, round, bytes,
sha256) and its body in data frames (`D` + at most `chunk` bytes), so a message of
any size streams (gRPC's own message limit applies to one frame) and its SHA-256 is
checked before it is decoded. Both sides append every message they send or receive
to an audit log (`AuditLog`): a site operator reads exactly what left the site.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any, Iterable, Iterator, NamedTuple

from fedray.server.state_types import StateTypes

METHOD = "/fedray.site.v1.Site/Call"
"""The one gRPC method a site serves: a stream of frames in, a stream of frames out."""
FRAME_LIMIT = 64 * 2**20
"""gRPC's per-frame message limit (a frame is one chunk plus its one-byte tag)."""


class WireError(ValueError):
    """A message that cannot be trusted: truncated, oversized, or not matching its digest."""


def wire_types(plugins: StateTypes | None = None) -> StateTypes:
    """The classes a message may construct: the checkpoint table, the run's plug-ins' state
    classes, and the round's own messages (instructions, secure aggregation's stages)."""
    from fedray import types
    from fedray.privacy.secagg import messages

    stage = [getattr(messages, n) for n in ("AdvertiseKeys", "PublicKeys", "ShareKeys", "EncryptedShares",
                                             "MaskInstructions", "Unmask", "RevealedShares")]
    known = list(plugins._plugins.values()) if plugins is not None else []
    evaluation = [getattr(types, n) for n in ("EvaluateInstructions", "EvaluateResult") if hasattr(types, n)]
    return StateTypes([types.FitInstructions, *evaluation, *stage, *known])


class Header(NamedTuple):
    kind: str
    server_round: int
    num_bytes: int
    sha256: str


def encode(value: Any, types: StateTypes) -> bytes:
    from fedray.server.serialize import encode as encode_state

    return encode_state(value, types)


def decode(body: bytes, types: StateTypes, peer: str) -> Any:
    from fedray.server.serialize import CheckpointError, decode as decode_state

    try:
        return decode_state(body, f"from {peer}", types=types)
    except CheckpointError as err:
        raise WireError(f"a message {err.where} cannot be read: {err.reason}") from None


def frames(kind: str, server_round: int, body: bytes, chunk: int) -> Iterator[bytes]:
    """One message as gRPC frames: its header, then its body in chunks."""
    header = Header(kind, server_round, len(body), hashlib.sha256(body).hexdigest())
    yield b"H" + json.dumps(header._asdict()).encode()
    for start in range(0, len(body), chunk):
        yield b"D" + body[start:start + chunk]


def messages(stream: Iterable[bytes], limit: int) -> Iterator[tuple[Header, bytes]]:
    """(header, body) of each message in a frame stream, its size and digest checked."""
    header, parts, size = None, [], 0
    for frame in stream:
        tag, data = frame[:1], frame[1:]
        if tag == b"H":
            if header is not None:
                raise WireError(f"a {header.kind} message ended after {size} of {header.num_bytes} bytes")
            header = _header(data, limit)
            parts, size = [], 0
        elif tag == b"D" and header is not None:
            parts.append(data)
            size += len(data)
            if size > header.num_bytes:
                raise WireError(f"a {header.kind} message is longer than the {header.num_bytes} bytes it declared")
        else:
            raise WireError(f"an unexpected frame (tag {tag!r})")
        if header is not None and size == header.num_bytes:
            body = b"".join(parts)
            if hashlib.sha256(body).hexdigest() != header.sha256:
                raise WireError(f"a {header.kind} message does not match its SHA-256 digest")
            yield header, body
            header = None
    if header is not None:
        raise WireError(f"the stream ended inside a {header.kind} message ({size} of {header.num_bytes} bytes)")


def _header(data: bytes, limit: int) -> Header:
    try:
        fields = json.loads(data)
        header = Header(str(fields["kind"]), int(fields["server_round"]), int(fields["num_bytes"]),
                        str(fields["sha256"]))
    except (ValueError, KeyError, TypeError) as err:
        raise WireError(f"an unreadable message header ({err})") from None
    if not 0 <= header.num_bytes <= limit:
        raise WireError(f"a {header.kind} message of {header.num_bytes} bytes (more than {limit})")
    return header


class AuditLog:
    """Append-only JSON lines, one per message sent or received: when, direction, round,
    kind, peer, bytes, sha256. Thread-safe; each line is flushed as it is written."""

    def __init__(self, path: str | os.PathLike, me: str):
        self.path, self.me = str(path), me
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = threading.Lock()

    def record(self, direction: str, peer: str, header: Header) -> None:
        line = json.dumps({"time": round(time.time(), 3), "party": self.me, "direction": direction,
                           "peer": peer, "round": header.server_round, "kind": header.kind,
                           "bytes": header.num_bytes, "sha256": header.sha256})
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def read_audit(path: str | os.PathLike) -> list[dict]:
    """An audit log's records, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Channel:
    """One side's way to send and receive messages: types, chunk size and audit together."""

    def __init__(self, types: StateTypes, chunk: int, audit: AuditLog, limit: int = 2**40):
        import safetensors.torch  # noqa: F401  (imported now, not inside a call's deadline)

        self.types, self.chunk, self.audit, self.limit = types, chunk, audit, limit

    def send(self, kind: str, server_round: int, value: Any, peer: str) -> Iterator[bytes]:
        body = encode(value, self.types)
        out = frames(kind, server_round, body, self.chunk)
        first = next(out)
        self.audit.record("sent", peer, _header(first[1:], self.limit))
        yield first
        yield from out

    def receive(self, stream: Iterable[bytes], peer: str) -> Iterator[tuple[Header, Any]]:
        for header, body in messages(stream, self.limit):
            self.audit.record("received", peer, header)
            yield header, decode(body, self.types, peer)
