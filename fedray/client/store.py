"""The client state store: where a client actor keeps its clients' state between rounds.

A client's kept state (optimizer moments, error-feedback residuals, control
variates, its DP accountant, replay buffers) is the client's: it never travels to
the server. A fit makes a *pending* state; the round's commit message says which
clients the server aggregated, and only their pending states become current
(two-phase commit), so a rejected, late, too-stale or failed attempt's update
leaves its client's state as it was.

On disk: one file per actor and round, `actor_NNNNN/round_NNNNNN.safetensors`,
written atomically by the one actor that hosts the clients in it (two processes
never write one client's state). It holds the states that round committed and the
pending states still in flight (async mode), so 100,000 clients do not mean
100,000 small files, and a round that commits nothing for an actor writes nothing.
Each commit names the rounds whose files a resume or a restart can still read
(`fedray.server.loop.retained_rounds`); the actor deletes its other files.
The server records, per client, the round of its current state and a digest; a
client's state is read back from that round's file and checked against the digest
(after an actor restart or a resume).

The file format is the checkpoint's (arrays as tensors, the rest as JSON, never a
pickle); its encoder and decoder are given (`StateCodec`), since the client
layer sits below the server's checkpoint module.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any, Callable, Collection, Mapping, NamedTuple

import numpy as np

from fedray.types import ClientId, PendingRef, StateRef


class StateCodec(NamedTuple):
    """How a store file's bytes are made and read (`fedray.server.serialize`'s encode, decode)."""

    encode: Callable[[Any], bytes]
    decode: Callable[[bytes, Any], Any]


class Pending(NamedTuple):
    """A fit's new state, waiting for the round's commit."""

    token: int
    """The fit it came from (`FitInstructions.seed`: one per round, client and launch)."""
    digest: str
    state: Any
    spent: Any = None
    """The state the client had, with only the new privacy account (DP-SGD): what it
    keeps if this update was sent but not aggregated (None without an account)."""


class StateLost(Exception):
    """A client's committed state is not in its store, or does not match its digest."""


def digest(state: Any) -> str:
    """A digest of a kept state's content: every array's dtype, shape and bytes, and the
    structure around them, so the same state always has the same digest."""
    h = hashlib.blake2b(digest_size=16)
    _feed(state, h)
    return h.hexdigest()


def _feed(value: Any, h) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous().numpy()
    if isinstance(value, np.ndarray) and value.dtype != object:
        h.update(f"a{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        h.update(f"m{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(key, h)
            _feed(value[key], h)
    elif isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(item, h)
    elif hasattr(value, "__dataclass_fields__"):
        h.update(type(value).__qualname__.encode())
        for name in value.__dataclass_fields__:
            _feed(getattr(value, name), h)
    else:
        h.update(f"{type(value).__name__}:{value!r}".encode())


class StateStore:
    """One actor's files under `directory/actor_NNNNN` (see the module docstring)."""

    def __init__(self, directory: str, actor: int, codec: StateCodec):
        self.directory = os.path.join(directory, f"actor_{actor:05d}")
        self.codec = codec
        self._cached: tuple[str, dict] | None = None
        """The last file read: a round's file serves all the clients it holds."""

    def path(self, server_round: int) -> str:
        return os.path.join(self.directory, f"round_{server_round:06d}.safetensors")

    def write(self, server_round: int, committed: Mapping[ClientId, Any], pending: Mapping[ClientId, Pending]) -> None:
        """Replace round `server_round`'s file, all or nothing (temporary file, then rename)."""
        os.makedirs(self.directory, exist_ok=True)
        data = self.codec.encode({"committed": dict(committed), "pending": dict(pending)})
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path(server_round))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._cached = None

    def read(self, server_round: int) -> dict:
        """Round `server_round`'s file as {"committed": ..., "pending": ...} (empty if absent)."""
        path = self.path(server_round)
        if self._cached is not None and self._cached[0] == path:
            return self._cached[1]
        if not os.path.exists(path):
            return {"committed": {}, "pending": {}}
        with open(path, "rb") as fh:
            content = self.codec.decode(fh.read(), path)
        self._cached = (path, content)
        return content

    def committed(self, client_id: ClientId, ref: StateRef) -> Any:
        """The state `ref` names, checked against its digest; StateLost if it cannot be."""
        found = self.read(ref.server_round)["committed"]
        if client_id not in found:
            raise StateLost(f"client {client_id}'s state of round {ref.server_round} is not in its store "
                            f"{self.path(ref.server_round)}")
        state = found[client_id]
        if digest(state) != ref.digest:
            raise StateLost(f"client {client_id}'s state of round {ref.server_round} in "
                            f"{self.path(ref.server_round)} does not match the digest the server recorded")
        return state

    def rounds(self) -> list[int]:
        """The rounds this actor has files of, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(n[6:12]) for n in os.listdir(self.directory)
                      if n.startswith("round_") and n.endswith(".safetensors"))

    def prune(self, retain: Collection[int]) -> list[int]:
        """Delete this actor's round files not in `retain` (no resume or restart can read
        them); the rounds deleted."""
        gone = [r for r in self.rounds() if r not in retain]
        for server_round in gone:
            os.unlink(self.path(server_round))
        if gone:
            self._cached = None
        return gone

    def pending(self, client_id: ClientId, token: int, before_round: int) -> Pending | None:
        """A pending state of fit `token` kept in the newest file before `before_round`."""
        for server_round in (r for r in reversed(self.rounds()) if r < before_round):
            found = self.read(server_round)["pending"].get(client_id)
            if found is not None and found.token == token:
                return found
        return None


class ClientStates:
    """An actor's side of the two-phase commit: its clients' current states (a cache of
    the store), their pending ones, and the store (None: kept in memory only)."""

    def __init__(self, store: StateStore | None, hosted, reset_lost: bool):
        self.store, self.hosted, self.reset_lost = store, set(hosted), reset_lost
        self.current: dict[ClientId, tuple[StateRef, Any]] = {}
        self.pending: dict[ClientId, Pending] = {}

    def get(self, client_id: ClientId, ref: StateRef | None, initial: Callable[[], Any]) -> tuple[Any, bool]:
        """(the state `ref` names, or `initial()` if None; whether it was lost and reset).
        A state that is neither cached nor in the store raises StateLost, unless lost
        states are reset (`clients.state_lost: reset`)."""
        if ref is None:
            return initial(), False
        cached = self.current.get(client_id)
        if cached is not None and cached[0][:2] == ref[:2]:
            return cached[1], False
        try:
            if self.store is None:
                raise StateLost(f"client {client_id}'s state of round {ref.server_round} is not on its actor "
                                "(restarted?) and there is no store to read it from")
            state = self.store.committed(client_id, ref)
        except StateLost as err:
            if not self.reset_lost:
                raise StateLost(f"{err} (a lost node or a deleted file?); with clients.state_lost: reset such a "
                                "client starts afresh instead") from None
            return initial(), True
        self.current[client_id] = (ref, state)
        return state, False

    def stage(self, client_id: ClientId, token: int, state: Any, before: Any) -> PendingRef | None:
        """Keep a fit's new `state` pending (replacing an older pending one of the client);
        `before` is the state it trained from."""
        if state is None:
            self.pending.pop(client_id, None)
            return None
        privacy = getattr(state, "privacy", None)
        spent = None if privacy is None else before._replace(privacy=privacy)
        pending = Pending(token, digest(state), state, spent)
        self.pending[client_id] = pending
        return PendingRef(token, pending.digest)

    def commit(self, server_round: int, committed: Mapping[ClientId, int], spent: Mapping[ClientId, int],
               keep: Mapping[ClientId, int], retain: Collection[int] | None = None) -> dict[ClientId, StateRef]:
        """Promote `committed`'s pending states; for `spent` (sent but not aggregated) take
        only the privacy account (the data was used); keep `keep`'s; drop the rest. Write
        the round's file, then delete the files of rounds not in `retain` (None: keep
        all); the new current states' refs."""
        refs, promoted = {}, {}
        for cid, token in committed.items():
            found = self._find(cid, token, server_round)
            if found is not None:
                promoted[cid] = found.state
        for cid, token in spent.items():
            found = self._find(cid, token, server_round)
            if found is not None and found.spent is not None:
                promoted[cid] = found.spent
        kept = {}
        for cid, token in keep.items():
            found = self._find(cid, token, server_round)
            if found is not None:
                kept[cid] = found
        for cid, state in promoted.items():
            ref = StateRef(server_round, digest(state), _epsilon(state))
            self.current[cid] = (ref, state)
            refs[cid] = ref
        self.pending = kept
        if self.store is not None and (promoted or kept):
            self.store.write(server_round, promoted, kept)
        if self.store is not None and retain is not None:
            self.store.prune(set(retain) | {server_round})
        return refs

    def _find(self, client_id: ClientId, token: int, server_round: int) -> Pending | None:
        """The pending state of fit `token`: in memory, or (after a restart or a resume, in
        async mode) in the store's newest earlier file that kept it."""
        if client_id not in self.hosted:
            return None
        found = self.pending.get(client_id)
        if found is not None and found.token == token:
            return found
        return None if self.store is None else self.store.pending(client_id, token, server_round)


def _epsilon(state: Any) -> float | None:
    privacy = getattr(state, "privacy", None)
    return None if privacy is None else float(privacy.epsilon)


def resolve_state_dir(given: str | None, run_dir: str) -> str:
    """The run's state store folder: `<given>/<run directory name>` (`clients.state_dir`), or
    `<run_dir>/clients`; a run directory on an object store (no atomic renames, no
    node-local files) keeps it under the machine's temporary folder unless given."""
    def local(where: str) -> str | None:
        if where.startswith("file://"):
            return where[len("file://"):]
        return None if "://" in where else where

    name = os.path.basename(run_dir.rstrip("/").split("?")[0])
    if given is not None:
        return os.path.join(local(given) or given, name)
    here = local(run_dir)
    return os.path.join(here, "clients") if here is not None else os.path.join(tempfile.gettempdir(), "fedray-clients", name)
