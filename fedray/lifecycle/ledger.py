"""The update ledger: who contributed what in a round, as one Parquet table per recorded round.

A round's table has a row per accepted client update, in aggregation order:
`round`, `client_id`, `weight` (what the update counted in the aggregate),
`norm` and `layer_norms` (L2 norms of the update, whole and per parameter
tensor, kept exactly whatever the codec), `update` (the encoded update) and
`scale` (the int8 codec's), plus the hashes of the global model before
(`base_hash`) and after (`model_hash`) the round. FedEraser rebuilds a model from
these rows; the hashes tie them to the run (the first base hash is the initial
model's, a checkpoint's model is the model hash of its round).

This module turns records into tables and back; the server writes them under
`<run dir>/ledger/round_NNNNNN.parquet`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from fedray.config.lifecycle import LEDGER_CODECS
from fedray.types import ClientId

LEDGER_DIR = "ledger"
"""The ledger's folder inside a run directory."""
_FILE = re.compile(r"^round_(\d{6})\.parquet$")
_META = b"fedray.ledger"
VERSION = 1


def ledger_file_name(server_round: int) -> str:
    return f"round_{server_round:06d}.parquet"


def ledger_file_round(name: str) -> int | None:
    """The round of a ledger file name (None for anything else, e.g. temporary files)."""
    match = _FILE.match(name)
    return int(match.group(1)) if match else None


def model_hash(params: np.ndarray) -> str:
    """A short fingerprint of a flat float32 parameter vector (bit-exact)."""
    flat = np.ascontiguousarray(params, dtype=np.float32)
    return hashlib.blake2b(flat.tobytes(), digest_size=16).hexdigest()


def layer_norms(update: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """L2 norm of each consecutive slice of `update` of the given sizes (one per tensor)."""
    bounds = np.cumsum([0, *sizes])
    u = np.asarray(update, dtype=np.float64)
    return np.array([np.linalg.norm(u[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.float64)


# ---- codecs: (encode(update) -> (bytes, scale), decode(bytes, scale, size) -> float32) ----
class Codec(NamedTuple):
    encode: Callable[[np.ndarray], tuple[bytes, float]]
    decode: Callable[[bytes, float, int], np.ndarray]


def _int8_encode(update: np.ndarray) -> tuple[bytes, float]:
    peak = float(np.max(np.abs(update))) if update.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.round(update / scale).astype(np.int8).tobytes(), scale


CODECS: dict[str, Codec] = {
    "float32": Codec(lambda u: (np.asarray(u, np.float32).tobytes(), 1.0),
                     lambda b, s, n: np.frombuffer(b, np.float32, n).copy()),
    "float16": Codec(lambda u: (np.asarray(u, np.float16).tobytes(), 1.0),
                     lambda b, s, n: np.frombuffer(b, np.float16, n).astype(np.float32)),
    "int8": Codec(_int8_encode, lambda b, s, n: np.frombuffer(b, np.int8, n).astype(np.float32) * np.float32(s)),
}
assert set(CODECS) == set(LEDGER_CODECS)


def round_table(server_round: int, accepted: Sequence[tuple[ClientId, float, np.ndarray]], base_hash: str,
                after_hash: str, codec: str, sizes: Sequence[int]) -> pa.Table:
    """One recorded round as a table (`accepted`: (client, weight, decoded update) in
    aggregation order; `sizes`: the parameter tensors' sizes, for per-layer norms)."""
    encode = CODECS[codec].encode
    encoded = [encode(np.asarray(update, np.float32)) for _, _, update in accepted]
    per_layer = [layer_norms(update, sizes) for _, _, update in accepted]
    n = len(accepted)
    columns = {
        "round": pa.array([server_round] * n, pa.int64()),
        "client_id": pa.array([int(c) for c, _, _ in accepted], pa.int64()),
        "weight": pa.array([float(w) for _, w, _ in accepted], pa.float64()),
        "norm": pa.array([float(np.sqrt(np.sum(ln ** 2))) for ln in per_layer], pa.float64()),
        "layer_norms": pa.array([ln.tolist() for ln in per_layer], pa.list_(pa.float64())),
        "update": pa.array([e for e, _ in encoded], pa.binary()),
        "scale": pa.array([s for _, s in encoded], pa.float64()),
        "base_hash": pa.array([base_hash] * n, pa.string()),
        "model_hash": pa.array([after_hash] * n, pa.string()),
    }
    meta = {"version": VERSION, "codec": codec, "num_params": int(sum(sizes)), "layer_sizes": list(sizes)}
    return pa.table(columns).replace_schema_metadata({_META: json.dumps(meta).encode()})


@dataclasses.dataclass(frozen=True)
class LedgerRound:
    """One recorded round, read back."""

    server_round: int
    base_hash: str
    """The global model the round's updates were computed from and applied to."""
    model_hash: str
    """The global model after the round."""
    clients: tuple[ClientId, ...]
    weights: np.ndarray
    norms: np.ndarray
    layer_norms: np.ndarray
    """(clients, tensors): each update's L2 norm per parameter tensor."""
    layer_sizes: tuple[int, ...]
    codec: str
    encoded: tuple[bytes, ...]
    scales: tuple[float, ...]

    @property
    def num_params(self) -> int:
        return int(sum(self.layer_sizes))

    def update(self, index: int) -> np.ndarray:
        """The `index`-th client's update, decoded to float32."""
        return CODECS[self.codec].decode(self.encoded[index], self.scales[index], self.num_params)


def read_round(table: pa.Table, where: str) -> LedgerRound:
    """A ledger table back as a `LedgerRound`; ValueError naming `where` if it is not one."""
    meta_raw = (table.schema.metadata or {}).get(_META)
    if meta_raw is None:
        raise ValueError(f"{where} is not a fedray ledger file")
    meta = json.loads(meta_raw)
    if meta.get("version") != VERSION or meta.get("codec") not in CODECS:
        raise ValueError(f"{where}: unsupported ledger version {meta.get('version')} / codec {meta.get('codec')}")
    rows = table.to_pydict()
    rounds, bases, models = set(rows["round"]), set(rows["base_hash"]), set(rows["model_hash"])
    if len(rounds) != 1 or len(bases) != 1 or len(models) != 1:
        raise ValueError(f"{where}: a ledger file must hold exactly one round")
    return LedgerRound(
        server_round=rounds.pop(),
        base_hash=bases.pop(),
        model_hash=models.pop(),
        clients=tuple(int(c) for c in rows["client_id"]),
        weights=np.asarray(rows["weight"], np.float64),
        norms=np.asarray(rows["norm"], np.float64),
        layer_norms=np.asarray(rows["layer_norms"], np.float64).reshape(len(rows["client_id"]), -1),
        layer_sizes=tuple(int(s) for s in meta["layer_sizes"]),
        codec=meta["codec"],
        encoded=tuple(rows["update"]),
        scales=tuple(float(s) for s in rows["scale"]),
    )
