"""The nouns of a federated run: who trains, what they are told, what comes back."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

import numpy as np

ClientId = int
"""Clients are numbered 0..num_clients-1; the id, not the actor, owns client state."""


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """Layout of a model's travelling parameters inside one flat float32 vector.

    Weights travel as a single contiguous array so that the object store can hand
    it to every client zero-copy and the server can aggregate into one buffer.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.sizes)])[:-1])

    @property
    def num_params(self) -> int:
        return int(sum(self.sizes))

    @property
    def num_bytes(self) -> int:
        return 4 * self.num_params

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views (no copies) of each named tensor inside `flat`."""
        assert flat.shape == (self.num_params,), (flat.shape, self.num_params)
        return {
            name: flat[off : off + size].reshape(shape)
            for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes)
        }

    def flatten(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.empty(self.num_params, dtype=np.float32)
        for name, off, size in zip(self.names, self.offsets, self.sizes):
            out[off : off + size] = np.asarray(tensors[name], dtype=np.float32).reshape(-1)
        return out


@dataclasses.dataclass(frozen=True)
class Context:
    """Where a transform or objective term is applied: the round, the client (None on the
    server) and the run's seed, from which every random draw derives.

    Randomness never comes from a global generator: `rng(tag)` is seeded from (run seed,
    round, client, tag), so noise and random codecs are reproducible whichever actor
    runs the client and in whatever order, and a resumed run draws the same numbers.
    """

    server_round: int
    client_id: ClientId | None
    seed: int
    num_clients: int = 0
    """Clients in the federation (N)."""
    num_aggregated: int = 0
    """On the server: updates in this round's aggregate (m); 0 on a client."""
    downlink: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The payloads broadcast this round: on a client, what it received (so a client
    transform can read e.g. adaptive clipping's clip norm); on the server, what the
    objective terms sent."""
    spec: ParamSpec | None = None
    """The layout (tensor names and shapes) of the update being transformed, where
    known: the client's own travelling parameters; None on the server."""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """On a client: its per-round instructions (`FitInstructions.config`), e.g. the
    upload byte budget a rate-adaptive codec sizes its payload to."""
    task: int = 0
    """The data schedule's task (continual learning, `data.schedule`): the client's on a
    client, the federation's on the server; 0 without a schedule."""

    def rng(self, tag: int = 0) -> np.random.Generator:
        """A generator for this (run, round, client) and `tag`, the same on every call."""
        who = 0 if self.client_id is None else self.client_id + 1
        return np.random.default_rng([self.seed, self.server_round, who, tag, 0xC0417E])


def payload_bytes(value: Any) -> int:
    """Bytes a payload takes on the wire: an array's buffer, or an encoded payload's
    `num_bytes` (top-k logits, quantised arrays), or the sum over a tuple of them."""
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "num_bytes"):
        return int(value.num_bytes)
    if isinstance(value, (tuple, list)):
        return sum(payload_bytes(v) for v in value)
    raise TypeError(f"cannot size a payload of type {type(value).__name__}")


@runtime_checkable
class Sealed(Protocol):
    """An update the server cannot read on its own (a secure-aggregation masked input):
    only the round's sum means anything, so the server checks only its form."""

    def problem(self, num_params: int) -> str | None:
        """Why this cannot be a well-formed update of `num_params` values, or None."""


class StateRef(NamedTuple):
    """What the server knows of a client's current kept state, which lives in the client's
    store (`fedray.client.store`): the round that committed it and a digest of it. It is
    all a server checkpoint holds of a client's state."""

    server_round: int
    digest: str
    dp_epsilon: float | None = None
    """The client's cumulative DP-SGD epsilon as of this state (None without `train.dp`),
    as the client reports it in its results."""


class PendingRef(NamedTuple):
    """A fit's new kept state, pending on its client until the round's commit."""

    token: int
    """Which fit made it (`FitInstructions.seed`)."""
    digest: str


@dataclasses.dataclass(frozen=True)
class FitInstructions:
    """What the server asks of one client in one round."""

    server_round: int
    client_id: ClientId
    seed: int
    """Per (round, client) seed so results do not depend on which actor runs the client."""
    payloads: tuple[str, ...] = ("params",)
    """Names of the broadcast payloads that follow the instructions in the call, in order
    (`params`, the global parameters in this client's layout, always first)."""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Per-round, per-client instructions, handed to the client's transforms as `Context.config`
    (e.g. `upload_bytes`, the budget of `rate: auto`); usually empty."""
    state: StateRef | None = None
    """The client's current kept state as the server recorded it (None: it has none yet):
    the client trains from exactly that state, read from its store if need be."""


class FailureKind(enum.Enum):
    """Why a client's round failed, as the transport and the client classify it (never
    parsed from a message): the loop decides on the kind, the note shows the detail."""

    data = "data"
    """Its data or its machine (a ValueError, OSError, MemoryError in training)."""
    numeric = "numeric"
    """Its numerics (an ArithmeticError: overflow, division by zero)."""
    timeout = "timeout"
    """Not in by `server.round_timeout_s`."""
    restarted = "restarted"
    """Its actor was restarted (by Ray) and had not been given its data again."""
    unavailable = "unavailable"
    """Its actor died, or cannot be reached; it leaves selection until it is back."""


@dataclasses.dataclass(frozen=True)
class ClientResult:
    """One client's answer for one round. A failure is a result, not an exception."""

    client_id: ClientId
    server_round: int
    num_examples: int = 0
    payloads: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """What the client sends back, by name: `delta` (the update: local weights minus the
    broadcast ones, after the client's transform chain, possibly encoded) and whatever
    the algorithm's objective terms return (e.g. SCAFFOLD's `control_delta`, top-k
    `public_logits` for knowledge transfer)."""
    pending: PendingRef | None = None
    """The client's new kept state (optimizer moments, control variates, error-feedback
    residuals, ...) stays on the client, pending: this names it. It becomes the client's
    state only if the round commits this update (None: the algorithm keeps no state)."""
    train_loss: float = float("nan")
    wall_s: float = 0.0
    """Seconds the client spent on this round, measured on the client."""
    error: str | None = None
    """What went wrong, for the notes (None: the round succeeded)."""
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    failure: FailureKind | None = None
    """The kind of failure (set whenever `error` is)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def update(self) -> Any:
        """The `delta` payload (None if absent)."""
        return self.payloads.get("delta")

    @property
    def num_bytes(self) -> int:
        """Bytes sent up: every payload in its travelling (encoded) form."""
        return sum(payload_bytes(v) for v in self.payloads.values())


@dataclasses.dataclass(frozen=True)
class EvaluateInstructions:
    """What the server asks of one client in a federated evaluation: evaluate the
    broadcast global model (and its personal models) on its own held-out rows."""

    server_round: int
    client_id: ClientId
    payloads: tuple[str, ...] = ("params",)
    """Names of the broadcast payloads that follow the instructions in the call
    (`params`, the global parameters in this client's layout, first)."""
    state: StateRef | None = None
    """The client's committed kept state (its personal part is evaluated), as the
    server recorded it; None: it has none yet."""


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """One client's evaluation: metrics only (never rows, predictions or weights).
    A failure is a result, as in training."""

    client_id: ClientId
    server_round: int
    num_examples: int = 0
    """Held-out rows the metrics are means over."""
    models: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    """Model (`global`, and e.g. `personal`) -> its metrics: `loss`, and `accuracy` and
    `perplexity` where the task defines them."""
    wall_s: float = 0.0
    """Seconds the client spent evaluating, measured on the client."""
    error: str | None = None
    failure: FailureKind | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """What one round did; one row of metrics.parquet."""

    server_round: int
    clients_selected: int
    clients_succeeded: int
    clients_failed: int
    updates_rejected: int
    attempts: int
    """1, plus the retries needed to reach `server.min_clients` successes."""
    train_loss: float
    eval_loss: float
    eval_accuracy: float
    bytes_up: int
    bytes_down: int
    round_wall_s: float
    wall_s: float
    """Seconds spent in rounds so far, at the end of this one."""
    clients: tuple[ClientId, ...] = ()
    """Ids of the clients whose updates were aggregated."""
    clients_late: int = 0
    """Results that came after the first `clients_per_round` or the deadline (dropped)."""
    sim_round_s: float = 0.0
    """Simulated seconds this round took (see fedray.hetero.simulation)."""
    sim_time_s: float = 0.0
    """The simulated clock at the end of this round."""
    staleness: tuple[int, ...] = ()
    """Per aggregated client (same order as `clients`): how many model updates old the
    model it trained on was (always 0 in `sync` mode)."""
    kd_loss: float = float("nan")
    """The foundation model's distillation loss after this round's ZeRO steps
    (clients -> server knowledge transfer), NaN without it."""
    eval_perplexity: float = float("nan")
    """exp(eval_loss) per target token for a language model; NaN for other tasks and
    rounds without an evaluation."""
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Further per-round figures reported by the algorithm's pieces (one column each)."""

    def as_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["round"] = row.pop("server_round")
        row["clients"] = list(self.clients)
        row.update(row.pop("metrics"))
        return row
