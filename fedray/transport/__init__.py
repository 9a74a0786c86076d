"""How a round reaches its clients: the `Transport` protocol, and its Ray and in-process forms.

The round (`fedray.server.loop`, `fedray.server.buffered`, secure aggregation's
stages) talks to clients only through these members; `fedray.transport.ray` is
the one module that knows actor handles, object references and Ray's exceptions,
and `fedray.transport.local` runs the same round in one process (the loop's unit
tests). Failures come back as `ClientResult`s with a `FailureKind`; an exception
raised by fedray or user code on a client is a bug and propagates.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from fedray.types import ClientId, ClientResult, EvaluateInstructions, EvaluateResult, FitInstructions, StateRef

RESENT = "resent"
"""A result's metric set (1.0) when its call was sent again to an actor Ray restarted."""

Tokens = Mapping[ClientId, int]
"""Client -> the fit (`FitInstructions.seed`) whose pending state a commit names."""


class Call(NamedTuple):
    """One client's fit: what it is asked and its share of the broadcast."""

    instructions: FitInstructions
    send: Any
    """`fedray.strategy.exchange.Send`: payload name -> handle from `put`, bytes, merges."""


class EvaluateCall(NamedTuple):
    """One client's evaluation: what it is asked and its share of the broadcast."""

    instructions: EvaluateInstructions
    send: Any
    """`fedray.strategy.exchange.Send`, as a fit's."""


class StageReplies(NamedTuple):
    """The answers to one protocol stage (secure aggregation's), and who dropped out why."""

    replies: dict[ClientId, Any]
    dropped: dict[ClientId, str]


class Transport(Protocol):
    """The server's only way to its clients."""

    def available(self) -> np.ndarray:
        """Ids of the clients that can be reached now, sorted."""

    def put(self, value: Any) -> tuple[Any, int]:
        """Broadcast one payload: a handle every client call may name, and its bytes."""

    def fit(self, calls: Sequence[Call], deadline: float | None) -> Iterator[ClientResult]:
        """Start every call's training; yield each result as it arrives. Calls still out
        at `deadline` (`time.perf_counter()`) are yielded last as `FailureKind.timeout`."""

    def evaluate(self, calls: Sequence[EvaluateCall], deadline: float | None) -> Iterator[EvaluateResult]:
        """Start every call's evaluation (read-only on the client: its kept state, its
        training generator and its privacy account are untouched); yield each result as
        it arrives, metrics only. Calls still out at `deadline` come last as timeouts."""

    def stage(self, messages: Mapping[ClientId, Any], timeout_s: float | None) -> StageReplies:
        """Send each client one message of a protocol stage and gather the replies."""

    def commit(self, server_round: int, committed: Tokens, spent: Tokens, keep: Tokens) -> dict[ClientId, StateRef]:
        """The second phase of a round's commit: `committed`'s pending states (their updates
        were aggregated) become current; `spent`'s (sent, not aggregated) keep only their
        privacy account; `keep`'s stay pending (async: still in flight); all others are
        dropped. The refs of the clients' new current states."""
