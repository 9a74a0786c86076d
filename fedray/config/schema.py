"""The configuration schema: dataclasses that omegaconf merges and type-checks.

Every field is part of the public contract (YAML files, `key=value` overrides,
tests). Unknown keys and wrong types are rejected by omegaconf while merging;
value ranges and cross-field rules are checked here, all at once, so the user
sees every problem in one message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Dict, List, Optional

from fedray.config.errors import ConfigError
from fedray.config.evaluation import EvalWhere, EvaluationConfig, evaluation_problems  # noqa: F401  (re-exported)
from fedray.config.finetune import Objective, objective_problems  # noqa: F401
from fedray.config.federation import FederationConfig, FederationSite, TlsConfig  # noqa: F401
from fedray.config.sites import site_problems
from fedray.config.lifecycle import ContributionConfig, LedgerConfig, Utility, record_problems  # noqa: F401
from fedray.config.ownership import ScheduleConfig, WatermarkConfig  # noqa: F401  (re-exported)
from fedray.config.scheduling import (  # noqa: F401  (part of this schema; re-exported)
    AvailabilityConfig,
    ComputeTime,
    Cost,
    DeadlineConfig,
    OortConfig,
    ParetoConfig,
    PowerOfChoiceConfig,
    ProfilesConfig,
    SelectionConfig,
)


from fedray.config.sections import (  # noqa: F401  (part of this schema; re-exported)
    Placement,
    ServerMode,
    PlacementStrategy,
    Optimizer,
    Dtype,
    Precision,
    RayConfig,
    DataConfig,
    PeftConfig,
    QuantizationConfig,
    ModelConfig,
    ResourcesConfig,
    PinnedClientsConfig,
    AttackConfig,
    ClientsConfig,
    TrainConfig,
    DPSGDConfig,
    ComponentConfig,
    component,
    ValidationConfig,
)
from fedray.config.foundation import (  # noqa: F401  (part of this schema; re-exported)
    DistillConfig,
    FoundationConfig,
    PublicConfig,
    PublicSource,
)


@dataclasses.dataclass
class ServerConfig:
    rounds: int = 10
    """Rounds to run (with `mode: async`, model updates)."""
    clients_per_round: int = 10
    """Clients aggregated per round (with `mode: async`, clients training at once)."""
    mode: ServerMode = ServerMode.sync
    """`sync` rounds, or `async` FedBuff-style buffered updates."""
    buffer_size: int = 5
    """`async`: the model is updated whenever this many client updates are in."""
    staleness: str = "inverse_sqrt"
    """`async`: weight of an update trained on a model `tau` updates old:
    `inverse_sqrt` 1/sqrt(1+tau) (FedBuff), `polynomial` (1+tau)^-staleness_exponent,
    `constant` 1, or a dotted path."""
    staleness_exponent: float = 0.5
    """The exponent of `polynomial` staleness weighting."""
    max_staleness: Optional[int] = None
    """`async`: updates staler than this are dropped (null: none are)."""
    deadline_s: Optional[float] = None
    """Simulated seconds a round may last: results that would finish later are late
    (dropped, or in `async` mode dropped as timed out). null: no deadline."""
    strategy: ComponentConfig = component("fedavg")
    """The named algorithm: `fedavg`, `fedavgm`, `fedadam`, `fedyogi`, `fedadagrad`,
    `fedprox`, `scaffold`, `local` (no federation: each client trains its own model,
    nothing travels), or a dotted path; its hyper-parameters in `args`."""
    aggregator: ComponentConfig = component("weighted_mean")
    """How the round's updates are combined: `weighted_mean`, `median`, `trimmed_mean`,
    `krum`, `multi_krum`, `centered_clip`, `norm_bound`, or a dotted path."""
    transforms: List[ComponentConfig] = field(default_factory=list)
    """Server transforms applied, in order, to the aggregate before the strategy's own
    step, `[{name, args}, ...]` (`clip_by_global_norm`, `scale`, `momentum`, `adam`, `yogi`,
    `adagrad`, `task_anchor`, or dotted paths)."""
    codec: ComponentConfig = component("none")
    """How the broadcast parameters travel: encoded once per round, decoded once per
    client actor (`none`, `fp16`, `bf16`, `int8`, `gain` with a fixed rate)."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """Which clients train each round, and each selector's settings."""
    privacy: Optional[ComponentConfig] = None
    """Client-level differential privacy: `fixed_clip` or `adaptive_clip` (DP-FedAvg)
    with their `args`; null: off."""
    secure_aggregation: Optional[ComponentConfig] = None
    """`secagg_plus` (SecAgg+) with its `args`: the server sees only the round's sum;
    null: off."""
    round_timeout_s: Optional[float] = 600.0
    """Results not in after this many seconds count as failed for the round."""
    min_clients: int = 1
    """Fewest successful clients for a round to count (else it is retried)."""
    eval_every: int = 1
    """Evaluate the global model on the server's split every N rounds (and always after the last)."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Where the global model is evaluated (the server's split, the clients' own rows,
    both, none), how often and on which share of the clients."""
    checkpoint_every: int = 1
    """Checkpoint every N rounds (and always after the last); 0 disables."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept; older ones are deleted."""
    max_round_retries: int = 2
    """A round with fewer than `min_clients` successes is run again (with a new
    selection) up to this many times; then the run stops, its checkpoints intact."""
    max_restarts: int = 3
    """Times the driver restarts a dead server actor from the last checkpoint."""
    budget_mb: Optional[float] = None
    """Communication budget in MB (10^6 bytes) of model traffic, up and down, over the
    whole run (FlowerTune's rule): the run says at start how many rounds fit and stops
    cleanly after the last one that does. null: no budget."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Checks every update passes before it is aggregated."""
    foundation_model: FoundationConfig = field(default_factory=FoundationConfig)
    """The server's own model, sharded with DeepSpeed ZeRO; off unless `model` is set."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Knowledge transfer between the foundation model and the clients on a public set."""
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)
    """Owners' watermark embedded while the model trains; off by default."""
    resources: ResourcesConfig = field(default_factory=lambda: ResourcesConfig(num_cpus=0.0))
    """Resources of the server actor. It mostly waits and aggregates, so by default it
    reserves no CPU and does not take a slot from the clients."""
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    """Record of the accepted client updates, for unlearning (`fedray unlearn`)."""
    contribution: ContributionConfig = field(default_factory=ContributionConfig)
    """Per-round valuation of each aggregated client's update, and the incentive payout."""

    def errors(self) -> list[str]:
        out = []
        if self.rounds < 1:
            out.append(f"server.rounds must be >= 1, got {self.rounds}")
        if self.clients_per_round < 1:
            out.append(f"server.clients_per_round must be >= 1, got {self.clients_per_round}")
        if self.round_timeout_s is not None and not self.round_timeout_s > 0:
            out.append(f"server.round_timeout_s must be > 0 or null, got {self.round_timeout_s}")
        if self.min_clients < 1:
            out.append(f"server.min_clients must be >= 1, got {self.min_clients}")
        elif self.min_clients > self.clients_per_round:
            out.append(
                f"server.min_clients ({self.min_clients}) must be <= "
                f"server.clients_per_round ({self.clients_per_round})"
            )
        if self.eval_every < 1:
            out.append(f"server.eval_every must be >= 1, got {self.eval_every}")
        if self.checkpoint_every < 0:
            out.append(f"server.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            out.append(f"server.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.max_round_retries < 0:
            out.append(f"server.max_round_retries must be >= 0, got {self.max_round_retries}")
        if self.max_restarts < 0:
            out.append(f"server.max_restarts must be >= 0, got {self.max_restarts}")
        if self.budget_mb is not None and not self.budget_mb > 0:
            out.append(f"server.budget_mb must be > 0 or null, got {self.budget_mb}")
        if self.buffer_size < 1:
            out.append(f"server.buffer_size must be >= 1, got {self.buffer_size}")
        elif self.mode is ServerMode["async"]:
            if self.buffer_size > self.clients_per_round:
                out.append(
                    f"server.buffer_size ({self.buffer_size}) must be <= "
                    f"server.clients_per_round ({self.clients_per_round}) with server.mode=async"
                )
            if self.min_clients > self.buffer_size:
                out.append(
                    f"server.min_clients ({self.min_clients}) must be <= "
                    f"server.buffer_size ({self.buffer_size}) with server.mode=async"
                )
        if self.staleness_exponent < 0:
            out.append(f"server.staleness_exponent must be >= 0, got {self.staleness_exponent}")
        if self.max_staleness is not None and self.max_staleness < 0:
            out.append(f"server.max_staleness must be >= 0 or null, got {self.max_staleness}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            out.append(f"server.deadline_s must be > 0 or null, got {self.deadline_s}")
        out += self.selection.errors()
        out += self.evaluation.errors()
        out += self.validation.errors()
        out += self.foundation_model.errors()
        out += self.distill.errors()
        if self.distill.enabled and self.foundation_model.model is None:
            out.append("server.distill needs a server.foundation_model.model to transfer knowledge with")
        if self.distill.public.refresh_every and self.mode is ServerMode["async"]:
            out.append("server.distill.public.refresh_every needs server.mode=sync: an asynchronous "
                       "client may still be answering on the previous public set")
        out += self.resources.errors("server.resources")
        out += self.ledger.errors() + self.contribution.errors()
        return out


@dataclasses.dataclass
class SweepConfig:
    """Experiment grid for `fedray sweep`; `fedray run` ignores it and runs the base config."""

    grid: Dict[str, List[Any]] = field(default_factory=dict)
    """Config key -> values, e.g. `{train.lr: [0.05, 0.1]}`; every combination is a run."""

    def errors(self) -> list[str]:
        return [f"sweep.grid.{key} must list at least one value" for key, vals in self.grid.items() if not vals]


@dataclasses.dataclass
class RunConfig:
    """A whole federated run. Sections mirror the YAML file."""

    name: str = "fedray"
    """Run name; the run directory is `<output_dir>/<name>/`."""
    seed: int = 0
    """Seeds the data split, model initialisation, selection and every client's training;
    in [0, 2**63) (torch's generators take at most 64 bits, and some seeds are offset)."""
    output_dir: str = "runs"
    """Where run directories go: a local folder every node can write, or a `pyarrow.fs` URI such as `s3://bucket/runs`."""
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    """Clients hosted by other organisations' Ray clusters (sites), reached over mutual TLS."""

    def __post_init__(self) -> None:
        problems = self.errors()
        if problems:
            raise ConfigError(problems)

    def errors(self) -> list[str]:
        out = []
        if not self.name or "/" in self.name or self.name in (".", ".."):
            out.append(f"name must be a non-empty directory name without '/', got {self.name!r}")
        if not 0 <= self.seed < 2**63:
            out.append(f"seed must be in [0, 2**63), got {self.seed}")
        for section in (self.ray, self.data, self.model, self.clients, self.train, self.server, self.sweep):
            out += section.errors()
        out += self.server.watermark.errors(self.clients.num_clients, self.output_dir)
        if self.server.clients_per_round > self.clients.num_clients:
            out.append(
                f"server.clients_per_round ({self.server.clients_per_round}) must be <= "
                f"clients.num_clients ({self.clients.num_clients})"
            )
        peft = self.model.peft
        if peft is not None and peft.client_ranks and len(peft.client_ranks) != self.clients.num_clients:
            out.append(
                f"model.peft.client_ranks has {len(peft.client_ranks)} ranks for "
                f"clients.num_clients={self.clients.num_clients} clients"
            )
        out += record_problems(self.server.ledger, self.server.contribution, self.model.peft)
        autos = [key for key, r in (("server.resources", self.server.resources),
                                    ("server.foundation_model.resources", self.server.foundation_model.resources),
                                    *((f"clients.pinned[{i}].resources", p.resources)
                                      for i, p in enumerate(self.clients.pinned))) if r.memory_gb == "auto"]
        if autos:
            out.append(f"memory_gb: auto is measured for clients.resources only; give a number for {autos}")
        out += objective_problems(self)
        out += evaluation_problems(self.server.evaluation, self.data.test_fraction, self.data.client_test_fraction,
                                   False, self.server.mode.value, self.server.contribution.name)
        if self.train.gradient_checkpointing and self.model.name != "hf_causal_lm":
            out.append(f"train.gradient_checkpointing needs model.name=hf_causal_lm, got {self.model.name}")
        out += self.federation.errors(self.clients.num_clients, self._actor_of)
        if self.federation.enabled and self.server.foundation_model.model is not None:
            out.append("federation.sites: knowledge transfer from server.foundation_model sends public inputs to "
                       "the client actors, which sites do not take yet; run it in one cluster")
        out += site_problems(self.data.sites, self.clients.num_clients, self.data.dataset, self.data.path,
                             None if peft is None or peft.client_ranks else peft.rank_rule, self.data.schedule.name)
        return out

    def _actor_of(self, client: int) -> int:
        """The actor hosting `client` (`fedray.client.pool.actor_index`, which imports Ray)."""
        return client % self.clients.num_actors if self.clients.placement is Placement.pool else client
