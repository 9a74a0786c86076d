"""Synthetic(alpha, beta): the FedProx paper's generated federated data, for any number of clients.

From Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020),
section 5.1, following the generator the authors released. Client k holds n_k
examples (x, y) with

    y = argmax softmax(W_k x + b_k),    x in R^d, y in {0..K-1}
    W_k ~ N(u_k, 1),  b_k ~ N(u_k, 1),  u_k ~ N(0, alpha)       (model heterogeneity)
    x ~ N(v_k, Sigma),  Sigma = diag(j^-1.2),  v_k ~ N(B_k, 1),  B_k ~ N(0, beta)   (data)

with n_k log-normal (a power law). Synthetic-IID gives every client the same
W, b ~ N(0, 1) and x ~ N(0, Sigma). Nothing is downloaded and the size is set by the
number of clients, so a run can have 100,000 of them.

Clients are generated in blocks, each from its own seeded stream, so memory stays
bounded by a block however many clients there are.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from fedray.config.schema import DataConfig
from fedray.config.synthetic import SyntheticConfig
from fedray.data.arrow import features_table
from fedray.data.datasets import DATASET_INDEXES, DATASETS, ArrayDataset, DataIndex, DataInfo

_BLOCK = 1024
"""Clients per generator block."""
_ROWS = 8192
"""Rows whose logits are computed at once (each gathers its client's d x K weights)."""
_TAG = 0x5E7D


class SyntheticClients(NamedTuple):
    """Generated examples, grouped by client (owner ascending)."""

    x: np.ndarray
    """float32 [rows, num_features]."""
    y: np.ndarray
    owner: np.ndarray
    sizes: np.ndarray
    """Examples per client."""
    weights: np.ndarray | None = None
    """With `keep_models`: each client's W [clients, num_features, num_classes]."""
    biases: np.ndarray | None = None
    input_means: np.ndarray | None = None
    """With `keep_models`: each client's v_k [clients, num_features]."""


@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """What `data.dataset: synthetic` builds: generated once the number of clients is known."""

    cfg: SyntheticConfig

    def for_clients(self, num_clients: int, seed: int) -> ArrayDataset:
        clients = generate(self.cfg, num_clients, seed)
        return ArrayDataset(clients.x, clients.y, self.cfg.num_classes, owner=clients.owner)

    def tables_at(self, num_clients: int, seed: int, row_sets: list[np.ndarray]) -> list[pa.Table]:
        """The examples at each set of (global) row numbers, generated one block at a time
        and only for the blocks that hold some: memory is bounded by a block and the rows
        kept, not by every client's data (a pool actor of 100,000 clients' run)."""
        sizes = client_sizes(self.cfg, num_clients, seed)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        starts = np.arange(0, num_clients, _BLOCK)
        scales = input_scales(self.cfg.num_features).astype(np.float32)
        shared = _shared_model(self.cfg, seed) if self.cfg.iid else None
        out = [(np.empty((len(r), self.cfg.num_features), np.float32), np.empty(len(r), np.int64)) for r in row_sets]
        blocks = [np.searchsorted(offsets[starts], r, side="right") - 1 for r in row_sets]
        for b, start in enumerate(starts):
            wanted = [np.flatnonzero(of == b) for of in blocks]
            if not any(len(w) for w in wanted):
                continue
            lo, hi = offsets[start], offsets[min(start + _BLOCK, num_clients)]
            x, y = np.empty((hi - lo, self.cfg.num_features), np.float32), np.empty(hi - lo, np.int64)
            _block(self.cfg, sizes, start, seed, scales, shared, x, y)
            for (x_out, y_out), rows, w in zip(out, row_sets, wanted):
                x_out[w], y_out[w] = x[rows[w] - lo], y[rows[w] - lo]
        return [features_table(x, y) for x, y in out]


@DATASETS.register("synthetic")
def synthetic(cfg: DataConfig) -> SyntheticData:
    """FedProx's Synthetic(alpha, beta), one client per generated device (`data.synthetic`)."""
    return SyntheticData(cfg.synthetic)


@DATASET_INDEXES.register("synthetic")
def synthetic_index(cfg: DataConfig, num_clients: int, seed: int) -> DataIndex:
    """Who owns each row, from the clients' sizes alone (cheap for 100,000 clients): what
    the natural partition and the per-owner test split need. No labels: drawing them
    means drawing the features."""
    owner = np.repeat(np.arange(num_clients, dtype=np.int64), client_sizes(cfg.synthetic, num_clients, seed))
    info = DataInfo("classification", cfg.synthetic.num_features, cfg.synthetic.num_classes)
    return DataIndex(owner, info)


def input_scales(num_features: int) -> np.ndarray:
    """Standard deviations of the input features: sqrt of Sigma's diagonal j^-1.2."""
    return np.arange(1, num_features + 1, dtype=np.float64) ** -0.6


def client_sizes(cfg: SyntheticConfig, num_clients: int, seed: int) -> np.ndarray:
    """Examples per client: floor(LogNormal(size_log_mean, size_log_sigma)) + size_min, capped."""
    rng = np.random.default_rng([seed, _TAG, 0])
    drawn = rng.lognormal(cfg.size_log_mean, cfg.size_log_sigma, num_clients)
    return np.minimum(np.floor(drawn) + cfg.size_min, cfg.size_max).astype(np.int64)


def generate(cfg: SyntheticConfig, num_clients: int, seed: int, keep_models: bool = False) -> SyntheticClients:
    """Every client's examples (and, with `keep_models`, the models and input means they
    were drawn from, for checking the generator)."""
    sizes = client_sizes(cfg, num_clients, seed)
    scales = input_scales(cfg.num_features).astype(np.float32)
    shared = _shared_model(cfg, seed) if cfg.iid else None
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    x = np.empty((offsets[-1], cfg.num_features), dtype=np.float32)  # filled in place: no second copy
    y = np.empty(offsets[-1], dtype=np.int64)
    models = []
    for start in range(0, num_clients, _BLOCK):
        rows = slice(offsets[start], offsets[min(start + _BLOCK, num_clients)])
        block = _block(cfg, sizes, start, seed, scales, shared, x[rows], y[rows])
        if keep_models:
            models.append(block)
    owner = np.repeat(np.arange(num_clients, dtype=np.int64), sizes)
    if not keep_models:
        return SyntheticClients(x, y, owner, sizes)
    return SyntheticClients(x, y, owner, sizes, *(np.concatenate([b[i] for b in models]) for i in range(3)))


def _shared_model(cfg: SyntheticConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, _TAG, 1])
    return rng.normal(0.0, 1.0, (cfg.num_features, cfg.num_classes)), rng.normal(0.0, 1.0, cfg.num_classes)


def _block(cfg: SyntheticConfig, sizes: np.ndarray, start: int, seed: int, scales: np.ndarray, shared,
           x: np.ndarray, y: np.ndarray):
    """Fill `x`, `y` with the examples of clients start .. start + _BLOCK, from the block's
    own stream; their (W, b, v)."""
    rng = np.random.default_rng([seed, _TAG, 2, start // _BLOCK])
    n, d, k = min(_BLOCK, len(sizes) - start), cfg.num_features, cfg.num_classes
    if shared is None:
        u = rng.normal(0.0, cfg.alpha, n).astype(np.float32)
        means = rng.normal(rng.normal(0.0, cfg.beta, n)[:, None], 1.0, (n, d))
        weights = rng.standard_normal((n, d, k), dtype=np.float32)
        weights += u[:, None, None]
        biases = rng.standard_normal((n, k), dtype=np.float32)
        biases += u[:, None]
    else:
        means = np.zeros((n, d))
        weights = np.broadcast_to(shared[0].astype(np.float32), (n, d, k))
        biases = np.broadcast_to(shared[1].astype(np.float32), (n, k))
    local = np.repeat(np.arange(n), sizes[start : start + n])
    rng.standard_normal(out=x, dtype=np.float32)
    x *= scales
    x += means.astype(np.float32)[local]
    for lo in range(0, len(local), _ROWS):
        rows = local[lo : lo + _ROWS]
        logits = np.matmul(x[lo : lo + _ROWS, None, :], weights[rows])[:, 0] + biases[rows]
        y[lo : lo + _ROWS] = logits.argmax(axis=1)  # softmax is monotone: its argmax is the logits'
    return weights, biases, means
