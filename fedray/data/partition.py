"""Split example indices among clients: IID, label-skewed (Dirichlet, shards) or natural (by owner).

A partitioner gets the group of every training example: its class for a
labelled dataset, its owner (file, folder, role) for text.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import DataConfig

Partitioner = Callable[[np.ndarray, int, DataConfig, np.random.Generator], list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partition")

_MAX_DIRICHLET_TRIES = 1000


@PARTITIONERS.register("iid")
def iid(labels: np.ndarray, num_clients: int, cfg: DataConfig, rng: np.random.Generator):
    """Shuffle and deal out near-equal shards."""
    if len(labels) < num_clients:
        raise ValueError(
            f"data: {len(labels)} training examples cannot give each of "
            f"clients.num_clients={num_clients} clients at least one"
        )
    return [np.sort(s) for s in np.array_split(rng.permutation(len(labels)), num_clients)]


@PARTITIONERS.register("dirichlet")
def dirichlet(labels: np.ndarray, num_clients: int, cfg: DataConfig, rng: np.random.Generator):
    """Label skew: for each class, client shares ~ Dir(alpha) (Hsu et al., 2019).

    Draws are repeated until every client holds `min_examples_per_client`, as
    in the common FedLab/NIID-Bench implementations.
    """
    need = cfg.min_examples_per_client
    if len(labels) < need * num_clients:
        raise ValueError(
            f"data.min_examples_per_client={need} x clients.num_clients={num_clients} "
            f"exceeds the {len(labels)} training examples"
        )
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(_MAX_DIRICHLET_TRIES):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            shares = rng.dirichlet(np.full(num_clients, cfg.alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].append(part)
        merged = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(m) for m in merged) >= need:
            return merged
    raise ValueError(
        f"data.alpha={cfg.alpha}: no Dirichlet split in {_MAX_DIRICHLET_TRIES} draws gave every "
        f"one of {num_clients} clients >= {need} examples; raise data.alpha or lower "
        "data.min_examples_per_client"
    )


@PARTITIONERS.register("shards")
def shards(labels: np.ndarray, num_clients: int, cfg: DataConfig, rng: np.random.Generator):
    """McMahan et al. (2017)'s pathological non-IID split: sort by label, cut into
    `num_clients x shards_per_client` shards of (nearly) equal size, and give each
    client `shards_per_client` of them at random. With shards no larger than a
    class, a client sees at most 2 x shards_per_client labels.
    """
    k = cfg.shards_per_client
    if len(labels) < num_clients * k:
        raise ValueError(
            f"data.partition=shards: {len(labels)} training examples cannot be cut into "
            f"clients.num_clients={num_clients} x data.shards_per_client={k} non-empty shards"
        )
    shuffled = rng.permutation(len(labels))  # who lands in which shard within a label is random
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(by_label, num_clients * k)
    dealt = rng.permutation(num_clients * k).reshape(num_clients, k)
    return [np.sort(np.concatenate([pieces[p] for p in hand])) for hand in dealt]


@PARTITIONERS.register("natural")
def natural(groups: np.ndarray, num_clients: int, cfg: DataConfig, rng: np.random.Generator):
    """One client per owner, in owner order (for labelled data, one per class)."""
    owners, counts = np.unique(groups, return_counts=True)
    if len(owners) != num_clients:
        raise ValueError(
            f"data.partition=natural gives one client per owner: the data has {len(owners)} "
            f"owners but clients.num_clients={num_clients}; set clients.num_clients="
            f"{len(owners)}, or keep fewer owners with data.owners / data.max_owners"
        )
    order = np.argsort(groups, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


def label_histogram(labels: np.ndarray, shards: list[np.ndarray], num_classes: int) -> np.ndarray:
    """counts[client, class]: how skewed a partition is."""
    return np.stack([np.bincount(labels[s], minlength=num_classes) for s in shards])
