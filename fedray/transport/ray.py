"""The Ray transport: the one module that knows actor handles, object references and Ray's errors.

Broadcast payloads enter the object store once (`put`) and every call names the
reference. A fit's result is fetched as it arrives (`ray.wait`) and turned into a
`ClientResult`; Ray's failures become typed ones:

- the actor is being restarted (`ActorUnavailableError`), or answers that it was
  restarted and has no data (`FailureKind.restarted` from the client): the
  transport waits, bounded by `RESTART_WAIT_S`, until its own handle sees the
  actor answer, hands it its data again and sends the call once more. A handle
  may learn of a restart only from a failed call, so without this the first
  round after a restart would lose the actor's clients for no reason of theirs;
- the actor died mid-call (`ActorDiedError`) or cannot be reached: the client
  failed the round (`FailureKind.unavailable`) and leaves selection until the
  pool's probe sees the actor back;
- an exception raised on the client that it did not count as its failure
  (`RayTaskError`): a bug, raised here so that the run stops with its traceback.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayError, RayTaskError

from fedray.client.pool import ClientPool
from fedray.transport import RESENT, Call, EvaluateCall, StageReplies, Tokens
from fedray.types import ClientId, ClientResult, EvaluateResult, FailureKind, StateRef, payload_bytes

RESTART_WAIT_S = 120.0
"""How long a call waits for a restarting actor to answer before its client fails the round."""
_GET_TIMEOUT_S = 60.0
"""A result that `ray.wait` reported ready is fetched within this (else the client failed)."""


class RayTransport:
    """Reaches the clients of a `ClientPool` (its actors, by client id)."""

    def __init__(self, pool: ClientPool):
        self.pool = pool

    def available(self) -> np.ndarray:
        return self.pool.available_clients()

    def put(self, value: Any) -> tuple[Any, int]:
        return ray.put(value), payload_bytes(value)

    def fit(self, calls: Sequence[Call], deadline: float | None) -> Iterator[ClientResult]:
        for result, resent in self._gather(calls, deadline, self.pool.fit, ClientResult):
            if resent:  # the round's notes say so (`RESENT`)
                result = dataclasses.replace(result, metrics={**result.metrics, RESENT: 1.0})
            yield result

    def evaluate(self, calls: Sequence[EvaluateCall], deadline: float | None) -> Iterator[EvaluateResult]:
        for result, _ in self._gather(calls, deadline, self.pool.evaluate, EvaluateResult):
            yield result

    def _gather(self, calls: Sequence, deadline: float | None, start, failed: type) -> Iterator[tuple[Any, bool]]:
        """Start every call (`start(instructions, send)`); yield (result, whether it was
        sent again after a restart) as results arrive, then timeouts; a failure is a
        `failed` record (`ClientResult` or `EvaluateResult`)."""
        pending = {start(*call): call for call in calls}
        resent: set[ClientId] = set()
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not ready:
                break
            call = pending.pop(ready[0])
            cid = call.instructions.client_id
            result = self._fetch(ready[0], call, failed)
            if result.failure is FailureKind.restarted and cid not in resent:
                resent.add(cid)
                if self.pool.wait_until_up(cid, RESTART_WAIT_S):
                    self.pool.reload(cid)  # runs on the actor before the call sent next
                    pending[start(*call)] = call
                    continue
            if result.failure in (FailureKind.restarted, FailureKind.unavailable):
                self.pool.mark_down(cid)
            yield result, cid in resent
        for ref, call in pending.items():  # past the deadline: dropped
            ray.cancel(ref)
            ins = call.instructions
            yield failed(client_id=ins.client_id, server_round=ins.server_round,
                         error="timed out", failure=FailureKind.timeout), False

    def _fetch(self, ref: ray.ObjectRef, call, failed: type):
        """The client's result, or its failure as a typed result."""
        ins = call.instructions
        try:
            result = ray.get(ref, timeout=_GET_TIMEOUT_S)
        except RayTaskError:
            raise  # a bug on the client: the run stops with its traceback
        except (RayError, GetTimeoutError) as exc:
            kind = FailureKind.restarted if isinstance(exc, ActorUnavailableError) else FailureKind.unavailable
            return failed(client_id=ins.client_id, server_round=ins.server_round,
                          error=_describe(exc), failure=kind)
        assert result.client_id == ins.client_id and result.server_round == ins.server_round, "result routed wrongly"
        return result

    def stage(self, messages: Mapping[ClientId, Any], timeout_s: float | None) -> StageReplies:
        pending = {self.pool.stage(cid, message): cid for cid, message in messages.items()}
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        replies, dropped = {}, {}
        for ref in ready:
            cid = pending[ref]
            try:
                replies[cid] = ray.get(ref)
            except RayTaskError as err:
                if not isinstance(err.cause, (ValueError, OSError)):
                    raise
                dropped[cid] = str(err.cause)
            except RayError as err:
                dropped[cid] = type(err).__name__
        for ref in late:
            ray.cancel(ref)
            dropped[pending[ref]] = "timed out"
        return StageReplies(dict(sorted(replies.items())), dropped)

    def commit(self, server_round: int, committed: Tokens, spent: Tokens, keep: Tokens) -> dict[ClientId, StateRef]:
        """Waits for every actor's answer, so the stores hold the round before the server
        checkpoints it. An actor that died meanwhile lost its clients' pending states:
        they are found missing (`clients.state_lost`) when those clients train next."""
        refs: dict[ClientId, StateRef] = {}
        for ref in self.pool.commit(server_round, committed, spent, keep):
            try:
                refs.update(ray.get(ref))
            except RayTaskError:
                raise
            except RayError:
                pass
        return refs


def _describe(exc: BaseException) -> str:
    """`ExceptionName: first line` of a Ray error, for the round's notes."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}".rstrip(": ")


