"""SecAgg+'s stages as calls through the round's transport, around its training.

`before_launch`: advertise keys, then share keys (two calls per client); the
clients that completed both get, with the round's broadcast, the shares
addressed to them and their live neighbours' mask keys, and mask their update
as it leaves them. `after_collect`: the clients whose masked input is in the
sum answer the unmask stage; the server removes the masks and the aggregator
decodes the sum. A client that does not answer a stage in time has dropped out:
before its masked input it is left out (its pairwise masks are removed from its
neighbours' inputs), after it its input still counts (its self mask is rebuilt
from its neighbours' shares).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from fedray.privacy.secagg.aggregate import SecureSum
from fedray.privacy.secagg.messages import AdvertiseKeys, Params
from fedray.privacy.secagg.server import SecAggError, ServerRound
from fedray.strategy.exchange import Send
from fedray.types import ClientId, payload_bytes

Stage = Callable[[Mapping[ClientId, Any], "float | None"], Any]
"""`stage(messages, timeout_s) -> (replies, dropped)`: the transport's `stage`."""
Put = Callable[[Any], "tuple[Any, int]"]
"""The transport's `put` (one broadcast payload -> (handle, bytes))."""


class SecureStages:
    """The server's driver of SecAgg+ for one run (see the module docstring)."""

    def __init__(self, params: Params, stage: Stage, put: Put, aggregator: SecureSum, timeout_s: float | None):
        assert isinstance(aggregator, SecureSum), "secure aggregation needs the SecureSum aggregator"
        self.params, self.stage, self.put, self.aggregator, self.timeout_s = params, stage, put, aggregator, timeout_s
        self.round: ServerRound | None = None
        self.server_s = 0.0
        """Seconds the server spent in protocol work (routing, reconstruction) so far."""

    def before_launch(self, server_round: int, sends: dict[ClientId, Send], tally) -> dict[ClientId, Send]:
        self.round = ServerRound.start(server_round, self.params, sends)
        keys = self._gather({c: AdvertiseKeys(server_round) for c in sends}, tally, "advertise keys")
        try:
            requests = self.round.share_requests(keys)
        except SecAggError as err:
            tally.notes.append(f"round {server_round}: {err}")
            return {}
        shared = self._gather(requests, tally, "share keys")
        instructions = self.round.mask_instructions(shared)
        self.aggregator.begin(self.round.num_levels)
        out = {}
        for cid, message in instructions.items():
            send = sends[cid]
            out[cid] = Send({**send.refs, "secagg": self.put(message)[0]}, send.num_bytes + message.num_bytes,
                            send.merges)
        return out

    def after_collect(self, server_round: int, tally) -> str | None:
        assert self.round is not None and self.round.server_round == server_round, "before_launch did not run"
        request = self.round.unmask_request(self.aggregator.clients)
        revealed = self._gather({u: request for u in request.survivors}, tally, "unmask")
        started = time.perf_counter()
        try:
            correction = self.round.correction(request, revealed, self.aggregator.num_params + 1)
        except SecAggError as err:
            return str(err)
        self.aggregator.unmask(correction)
        self.server_s += time.perf_counter() - started
        tally.metrics.update(secagg_dropped=float(len(request.dropped)),
                             secagg_recovered=float(len(set(request.survivors) - set(revealed))))
        return None

    def _gather(self, messages: Mapping[ClientId, Any], tally, stage: str) -> dict[ClientId, Any]:
        """Each client's reply to its message; a client that fails or is not in by the
        round timeout has dropped out (noted, not raised)."""
        tally.bytes_down += sum(payload_bytes(m) for m in messages.values() if hasattr(m, "num_bytes"))
        replies, dropped = self.stage(messages, self.timeout_s)
        for cid in sorted(replies):
            tally.bytes_up += payload_bytes(replies[cid])
        for cid, why in sorted(dropped.items()):
            tally.notes.append(f"client {cid} dropped out of secure aggregation ({stage}): {why}")
        return replies
