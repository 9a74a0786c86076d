"""What crosses the wire: frames reassemble exactly, digests catch changes, only data is built."""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import pytest

from fedray.sites.wire import AuditLog, Channel, WireError, frames, messages, read_audit, wire_types
from fedray.types import ClientResult, FailureKind, FitInstructions, StateRef


@pytest.fixture
def channel(tmp_path):
    return Channel(wire_types(), chunk=1000, audit=AuditLog(tmp_path / "audit.jsonl", "server"))


def test_a_message_larger_than_a_chunk_streams_and_comes_back_equal(channel):
    params = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    ins = FitInstructions(2, 3, 99, ("params",), {"upload_bytes": 10}, StateRef(1, "ab" * 32))
    sent = list(channel.send("fit", 2, {"calls": [(ins, [("params", 0)], [])], "payloads": [params]}, "site-a"))
    assert len(sent) > 20  # header + 20 KB in 1000-byte chunks
    (header, got), = channel.receive(iter(sent), "site-a")
    assert header.kind == "fit" and header.server_round == 2
    assert got["calls"][0][0] == ins and np.array_equal(got["payloads"][0], params)


def test_a_result_with_a_failure_kind_round_trips(channel):
    result = ClientResult(4, 1, train_loss=0.5, error="site site-b: UNAVAILABLE", failure=FailureKind.unavailable)
    (_, got), = channel.receive(iter(list(channel.send("result", 1, result, "server"))), "server")
    assert got == result


def test_both_directions_are_in_the_audit_log_with_the_same_digest(channel, tmp_path):
    list(channel.receive(iter(list(channel.send("commit", 5, (5, {1: 7}, {}, {}), "site-a"))), "site-a"))
    sent, received = read_audit(tmp_path / "audit.jsonl")
    assert (sent["direction"], received["direction"]) == ("sent", "received")
    assert sent["sha256"] == received["sha256"] and sent["bytes"] == received["bytes"] > 0
    assert (sent["round"], sent["kind"], sent["peer"]) == (5, "commit", "site-a")


def test_a_changed_byte_is_caught_by_the_digest_before_decoding():
    body = b"x" * 3000
    sent = list(frames("fit", 1, body, 1000))
    sent[2] = sent[2][:10] + b"y" + sent[2][11:]
    with pytest.raises(WireError, match="a fit message does not match its SHA-256 digest"):
        list(messages(iter(sent), limit=10**6))


@pytest.mark.parametrize("cut, reason", [(2, "the stream ended inside a fit message"),
                                         (0, "the stream ended inside")])
def test_a_truncated_stream_is_refused(cut, reason):
    sent = list(frames("fit", 1, b"z" * 3000, 1000))
    with pytest.raises(WireError, match=reason):
        list(messages(iter(sent[:cut + 1]), limit=10**6))


def test_a_message_over_the_limit_is_refused_from_its_header():
    header = b"H" + json.dumps({"kind": "fit", "server_round": 1, "num_bytes": 10**12, "sha256": "0"}).encode()
    with pytest.raises(WireError, match="a fit message of 1000000000000 bytes"):
        list(messages(iter([header]), limit=10**9))


def test_a_message_naming_a_class_outside_the_table_builds_nothing(channel):
    """A peer cannot make the receiver construct (or import) an arbitrary class: no pickle."""
    from fedray.server.serialize import encode
    from fedray.server.state_types import StateTypes

    class Exploit(NamedTuple):
        command: str

    Exploit.__module__, Exploit.__qualname__ = "os", "system"
    body = encode(Exploit("echo pwned"), StateTypes([Exploit]))  # the writer allows it; the reader does not
    with pytest.raises(WireError, match="'os:system', which is not a state type"):
        list(channel.receive(iter(list(frames("result", 1, body, 1000))), "site-a"))
