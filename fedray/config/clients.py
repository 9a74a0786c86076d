"""The `clients` section: how many, on which actors, with which resources, attacks,
transforms and codec, and where their kept state lives."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import List, Optional

from fedray.config.component import ComponentConfig, component
from fedray.config.resources import PinnedClientsConfig, ResourcesConfig
from fedray.config.scheduling import AvailabilityConfig, ProfilesConfig


class Placement(enum.Enum):
    """How simulated clients map onto Ray actors."""

    actor_per_client = "actor_per_client"
    """One actor per client, each with `clients.resources` (cross-silo)."""
    pool = "pool"
    """`clients.pool_size` actors multiplex all clients (cross-device simulation)."""


class StateLostPolicy(enum.Enum):
    """What a client whose kept state is gone from its store (a lost node, a deleted
    file) does when it is next selected."""

    error = "error"
    """Stop the run with an error naming the client and its store."""
    reset = "reset"
    """Start that client afresh from the initial state (counted: `state_resets`, logged)."""


@dataclasses.dataclass
class AttackConfig:
    """Simulated malicious clients, for robustness experiments (off by default)."""

    name: Optional[str] = None
    """On the update: `nan`, `wrong_shape`, `scale`, `sign_flip`, `gaussian`; on the
    data: `label_flip`, `backdoor`; or a dotted path; null: no attack."""
    clients: List[int] = field(default_factory=list)
    """Ids of the attacking clients."""
    scale: float = 100.0
    """Factor for `scale` (the update is multiplied by it)."""
    std: float = 1.0
    """`gaussian`: the update is replaced by N(0, std^2) noise in every coordinate."""
    target: int = 0
    """`backdoor`: the label that inputs carrying the trigger are trained to."""
    trigger: List[int] = field(default_factory=list)
    """`backdoor`: indices of the (flattened) input features the trigger sets to
    `trigger_value`; empty: the last four."""
    trigger_value: float = 1.0
    """`backdoor`: the value the trigger's features are set to."""
    fraction: float = 0.5
    """`backdoor`: share of the attacker's examples given the trigger and the target label."""

    def errors(self) -> list[str]:
        out = []
        if not self.std > 0:
            out.append(f"clients.attack.std must be > 0, got {self.std}")
        if not 0 < self.fraction <= 1:
            out.append(f"clients.attack.fraction must be in (0, 1], got {self.fraction}")
        if self.target < 0:
            out.append(f"clients.attack.target must be a label >= 0, got {self.target}")
        return out


@dataclasses.dataclass
class ClientsConfig:
    num_clients: int = 10
    """Number of clients; the data is split among them."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Ray resources of each client actor."""
    placement: Placement = Placement.actor_per_client
    """`actor_per_client` (one actor each, cross-silo) or `pool` (`pool_size` actors multiplex all clients)."""
    pool_size: int = 2
    """Number of actors with `placement: pool`."""
    max_restarts: int = 3
    """Times Ray restarts a client actor that died (-1: always). Its in-flight
    clients fail for that round; they rejoin once the actor is back."""
    attack: AttackConfig = field(default_factory=AttackConfig)
    """Simulated malicious clients (off by default)."""
    pinned: List[PinnedClientsConfig] = field(default_factory=list)
    """Per-client resources (`placement: actor_per_client` only), e.g.
    `[{clients: [0, 1], resources: {custom: {silo_a: 1}}}]` runs clients 0 and 1 on
    the node that advertises `silo_a`; a `label_selector` or `num_gpus` pins likewise."""
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    """Simulated devices: each client's compute speed and bandwidths."""
    availability: AvailabilityConfig = field(default_factory=AvailabilityConfig)
    """When each client is online, on the simulated clock."""
    max_failures: Optional[int] = 5
    """A client that failed this many times in a row is no longer selected
    (null: always retried). A failed client is retried on a later round."""
    transforms: List[ComponentConfig] = field(default_factory=list)
    """The client chain: update transforms applied, in order, to each client's update
    before it leaves the client (e.g. `clip_by_global_norm`); their state is kept per
    client id."""
    objective: List[ComponentConfig] = field(default_factory=list)
    """Terms added to every client's local objective (e.g. `proximal`), on top of those
    the strategy brings (FedProx's, SCAFFOLD's)."""
    excluded: List[int] = field(default_factory=list)
    """Ids of clients never selected (e.g. the clients `fedray unlearn` forgets); their
    data stays where the partition put it, so every other client's shard is unchanged."""
    codec: ComponentConfig = component("none")
    """How each update travels: the last step of the client chain, decoded by the server
    before it checks and aggregates (`none`, `fp16`, `bf16`, `int8`, `qsgd`, `top_k`,
    `random_k`, `sign`, `gain`, `content`, `content_auto`, or a dotted path)."""
    personalization: Optional[ComponentConfig] = None
    """The part of the model that is each client's own (`fedray.personalization`):
    `finetune` (args `steps`, `lr`), `fedper` (`patterns`), `fedrep` (`patterns`,
    `head_epochs`), `ditto` (`lam`, `epochs`), `fedbn`, `personal_adapter` (LoRA
    runs: a second, personal adapter beside the shared one), or a dotted path. The personal
    part is client state: kept in the client store, never sent, never in a server
    checkpoint. null: none."""
    state_dir: Optional[str] = None
    """Where the client actors keep their clients' state between rounds (optimizer
    moments, error-feedback residuals, control variates, DP accountants, replay
    buffers): one file per actor and round, never sent to the server. None:
    `<run_dir>/clients/`. A filesystem path: node-local storage keeps a client's state
    on its node; shared storage lets Ray restart an actor on another node. The run's
    files go under `<state_dir>/<run directory name>/`."""
    state_lost: StateLostPolicy = StateLostPolicy.error
    """A client whose state is missing from its store or does not match the digest the
    server recorded: `error` stops the run naming it, `reset` restarts it from scratch."""

    def errors(self) -> list[str]:
        out = []
        if self.num_clients < 1:
            out.append(f"clients.num_clients must be >= 1, got {self.num_clients}")
        if self.pool_size < 1:
            out.append(f"clients.pool_size must be >= 1, got {self.pool_size}")
        if self.state_dir is not None and "://" in self.state_dir and not self.state_dir.startswith("file://"):
            out.append(f"clients.state_dir must be a filesystem path (local or mounted on the client nodes), "
                       f"got {self.state_dir!r}")
        if self.max_restarts < -1:
            out.append(f"clients.max_restarts must be >= -1, got {self.max_restarts}")
        bad = [c for c in self.attack.clients if not 0 <= c < self.num_clients]
        if bad:
            out.append(f"clients.attack.clients {bad} are not client ids in [0, {self.num_clients})")
        out += self.attack.errors()
        bad = sorted(c for c in self.excluded if not 0 <= c < self.num_clients)
        if bad:
            out.append(f"clients.excluded {bad} are not client ids in [0, {self.num_clients})")
        if self.num_clients and len(set(self.excluded)) >= self.num_clients:
            out.append(f"clients.excluded leaves no client to select ({len(set(self.excluded))} of "
                       f"{self.num_clients} excluded)")
        if self.max_failures is not None and self.max_failures < 1:
            out.append(f"clients.max_failures must be >= 1 or null, got {self.max_failures}")
        out += self.resources.errors("clients.resources")
        if self.pinned and self.placement is not Placement.actor_per_client:
            out.append("clients.pinned needs clients.placement: actor_per_client (one actor per client)")
        seen: set[int] = set()
        for i, pin in enumerate(self.pinned):
            bad = sorted(c for c in pin.clients if not 0 <= c < self.num_clients)
            if bad:
                out.append(f"clients.pinned[{i}].clients {bad} out of range 0..{self.num_clients - 1}")
            twice = sorted(seen.intersection(pin.clients))
            if twice:
                out.append(f"clients.pinned[{i}].clients {twice} are already pinned by an earlier entry")
            seen.update(pin.clients)
            out += pin.resources.errors(f"clients.pinned[{i}].resources")
        out += self.profiles.errors()
        out += self.availability.errors()
        return out

    def actor_resources(self, actor: int) -> ResourcesConfig:
        """Resources of client actor `actor` (pinned clients' own, else the default)."""
        if self.placement is Placement.actor_per_client:
            for pin in self.pinned:
                if actor in pin.clients:
                    return pin.resources
        return self.resources

    @property
    def num_actors(self) -> int:
        if self.placement is Placement.pool:
            return min(self.pool_size, self.num_clients)
        return self.num_clients
