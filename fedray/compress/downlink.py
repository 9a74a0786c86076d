"""The broadcast codec (`server.codec`): encode each distinct payload once, decode it once per actor.

The server encodes the global parameters (per LoRA rank, each distinct payload)
once per broadcast and puts the encoded form into the object store; that is what
every selected client downloads, so `bytes_down` and the simulated download times
are its size. A pool actor hosts many clients, and all of them get the same
object, so each actor decodes it once: the payload travels as a `Broadcast` with a
key unique to that put, and the actor keeps the last few decoded arrays by key.

Random rounding on the server draws from the round's context (tagged by the
payload's length), so a resumed run encodes the same bits.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Mapping

import numpy as np

from fedray.transforms import UpdateTransform
from fedray.types import Context, payload_bytes

Put = Callable[[np.ndarray], "tuple[Any, int]"]
"""Put one payload into the object store: (ObjectRef, bytes on the wire)."""


@dataclasses.dataclass(frozen=True)
class Broadcast:
    """An encoded broadcast payload, named so that an actor decodes it once."""

    payload: Any
    key: tuple[str, int]
    """(the encoder's random id, its put counter): unique among the payloads of a run."""
    server_round: int

    @property
    def num_bytes(self) -> int:
        return payload_bytes(self.payload)


class BroadcastEncoder:
    """The server side: `put_for(round, send)` encodes and sends; `take_seconds()` reports the time."""

    def __init__(self, codec: UpdateTransform, seed: int):
        self.codec, self.seed = codec, seed
        self._id, self._count, self._seconds = uuid.uuid4().hex, 0, 0.0

    def put_for(self, server_round: int, send: Put) -> Put:
        """The round's put: encode, then broadcast the encoded payload through `send`."""

        def put(value: np.ndarray) -> tuple[Any, int]:
            started = time.perf_counter()
            ctx = Context(server_round, None, self.seed + value.size)
            payload, _ = self.codec.apply(value, self.codec.init(value[:0]), value, ctx)
            self._count += 1
            wrapped = Broadcast(payload, (self._id, self._count), server_round)
            self._seconds += time.perf_counter() - started
            return send(wrapped)[0], wrapped.num_bytes

        return put

    def take_seconds(self) -> float:
        """Encoding seconds since the last call."""
        seconds, self._seconds = self._seconds, 0.0
        return seconds


class BroadcastDecoder:
    """The client actor side: decoded arrays by key, the `keep` most recent."""

    def __init__(self, codec: UpdateTransform, seed: int, keep: int = 4):
        self.codec, self.seed, self.keep = codec, seed, keep
        self._decoded: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def decode(self, payloads: Mapping[str, Any]) -> tuple[dict[str, Any], float, int]:
        """`payloads` with every `Broadcast` decoded; (payloads, seconds, decodes done)."""
        out, seconds, decodes = dict(payloads), 0.0, 0
        for name, value in payloads.items():
            if not isinstance(value, Broadcast):
                continue
            if value.key not in self._decoded:
                started = time.perf_counter()
                ctx = Context(value.server_round, None, self.seed)
                decoded = self.codec.decode(value.payload, ctx)
                decoded.setflags(write=False)  # shared by every client of this actor
                self._decoded[value.key] = decoded
                seconds += time.perf_counter() - started
                decodes += 1
                while len(self._decoded) > self.keep:
                    self._decoded.popitem(last=False)
            out[name] = self._decoded[value.key]
        return out, seconds, decodes
