"""The ZeRO worker group: a Ray placement group of ranks driven as one model.

The server actor owns a `FoundationGroup`. It reserves the workers' resources
in one placement group (PACK or SPREAD), starts one `ZeroWorker` per bundle,
forms their process group through rank 0's address, and from then on calls
every method on all ranks at once. If a rank dies, the call fails fast with
`FoundationError` naming it and the group is torn down; peers blocked in a
collective are killed rather than left to hang.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fedray.config.schema import Dtype, FoundationConfig
from fedray.data.federated import DataInfo
from fedray.foundation.distill import TopK
from fedray.foundation.public import public_task
from fedray.foundation.worker import WorkerSpec, ZeroWorker

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup


class FoundationError(RuntimeError):
    """The foundation model's worker group failed (a rank died or raised)."""


_MAX_LOGITS = 2**25
"""Logit elements per forward pass on a rank (128 MiB in float32)."""


def equal_shares(num_rows: int, world: int) -> tuple[list[np.ndarray], list[int]]:
    """Row indices for each rank, all of one length (ZeRO-3 ranks must run the same
    passes): nearly equal parts, the shorter ones padded by repeating a row; and how
    many of each part are real."""
    parts = np.array_split(np.arange(num_rows), world)
    width = max(len(p) for p in parts)
    padded = [np.concatenate([p, np.full(width - len(p), p[-1] if len(p) else 0)]).astype(np.int64)
              for p in parts]
    return padded, [len(p) for p in parts]


def shared_gpus(addresses: Sequence[dict]) -> str | None:
    """NCCL refuses two ranks on one GPU; say which ranks share one, or None."""
    seen: dict[tuple, int] = {}
    for rank, where in enumerate(addresses):
        for gpu in where["gpu_ids"]:
            other = seen.setdefault((where["node_id"], gpu), rank)
            if other != rank:
                return (f"foundation model ranks {other} and {rank} share GPU {gpu} on node {where['ip']}; "
                        "NCCL needs a GPU of its own per rank: give each rank "
                        "server.foundation_model.resources.num_gpus: 1, or use num_workers: 1")
    return None


def build_ds_config(cfg: FoundationConfig) -> dict:
    """DeepSpeed's config from ours, with `cfg.deepspeed` merged over it untouched."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if cfg.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    generated = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": cfg.micro_batch_size * cfg.num_workers,
        "zero_optimization": zero,
        # torch's AdamW: no compiled DeepSpeed op needed on CPU-only machines
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "torch_adam": True}},
        "steps_per_print": 2**31 - 1,
    }
    if cfg.dtype is Dtype.bfloat16:  # null: decided by each rank from its device
        generated["bf16"] = {"enabled": True}
    elif cfg.dtype is Dtype.float16:
        generated["fp16"] = {"enabled": True}
    return _deep_merge(generated, cfg.deepspeed)


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else copy.deepcopy(value)
    return out


class FoundationGroup:
    def __init__(self, cfg: FoundationConfig, info: DataInfo, seed: int, name_prefix: str,
                 placement_group: "PlacementGroup | None" = None):
        """Start the ranks in `placement_group` (reserved by the launcher before the
        first round), or in a group reserved here if none is given."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from fedray.cluster.placement import reserve_worker_group

        self.cfg = cfg
        self._owns_group = placement_group is None
        self.placement_group = placement_group or reserve_worker_group(cfg, f"{name_prefix}/foundation")
        spec = WorkerSpec(cfg, info, seed, build_ds_config(cfg))
        remote = ray.remote(ZeroWorker)
        self.workers = [
            remote.options(
                name=f"{name_prefix}/foundation-rank-{rank}",
                num_cpus=cfg.resources.num_cpus, num_gpus=cfg.resources.num_gpus,
                resources=dict(cfg.resources.custom) or None, memory=cfg.resources.memory_bytes,
                max_restarts=0,  # a lost shard cannot be rebuilt in place: restart from a checkpoint
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.placement_group, placement_group_bundle_index=rank),
            ).remote(rank, cfg.num_workers, spec)
            for rank in range(cfg.num_workers)
        ]
        self.info = info
        addresses = self._all("address")
        shared = shared_gpus(addresses)
        if shared:
            self.shutdown()
            raise FoundationError(shared)
        self.ranks = self._all("setup", addresses[0]["ip"], addresses[0]["port"])

    # ---- the model, as one --------------------------------------------------
    def partition_numels(self) -> list[int]:
        return self._all("local_numel")

    def top_k(self, inputs: np.ndarray, k: int, temperature: float) -> TopK:
        """The model's top-k distribution at temperature T on every row of `inputs`; each
        rank computes a share."""
        parts, sizes = equal_shares(len(inputs), len(self.workers))
        rows_per_pass = self._rows_per_pass(inputs)
        answers = self._call([w.top_k.remote(inputs[part], k, temperature, rows_per_pass)
                              for w, part in zip(self.workers, parts)])
        values = np.concatenate([v[:n] for (v, _), n in zip(answers, sizes)])
        indices = np.concatenate([i[:n] for (_, i), n in zip(answers, sizes)])
        return TopK(values, indices)

    def kd_loss(self, inputs: np.ndarray, target: TopK, temperature: float, rest_mass: bool = False) -> float:
        """Mean KD loss of the model against `target` over every counted public position."""
        parts, sizes = equal_shares(len(inputs), len(self.workers))
        rows_per_pass = self._rows_per_pass(inputs)
        answers = self._call([
            w.kd_loss.remote({"inputs": inputs[p], "teacher_values": target.values[p],
                              "teacher_indices": target.indices[p]}, temperature, rest_mass, rows_per_pass)
            for w, p in zip(self.workers, parts)])
        sums = np.concatenate([a[:n] for a, n in zip(answers, sizes)]).sum(0)
        return float(sums[0] / max(1.0, sums[1]))

    def generate(self, prefixes: Sequence[np.ndarray], seq_len: int, temperature: float, top_p: float,
                 seed: int) -> np.ndarray:
        """int32 [len(prefixes), seq_len]: row i continues `prefixes[i]` by sampling. Rows
        with the same prefix form one job; every rank takes an equal share of each job."""
        jobs: dict[bytes, list[int]] = {}
        for row, prefix in enumerate(prefixes):
            jobs.setdefault(np.asarray(prefix, np.int64).tobytes(), []).append(row)
        per_rank: list[list] = [[] for _ in self.workers]
        kept: list[list] = [[] for _ in self.workers]
        for rows in jobs.values():
            parts, sizes = equal_shares(len(rows), len(self.workers))
            for rank, (part, n) in enumerate(zip(parts, sizes)):
                ids = np.asarray(rows)[part]
                per_rank[rank].append((np.asarray(prefixes[rows[0]], np.int64), ids))
                kept[rank].append(ids[:n])
        answers = self._call([w.generate.remote(jobs_r, seq_len, temperature, top_p, seed)
                              for w, jobs_r in zip(self.workers, per_rank)])
        out = np.empty((len(prefixes), seq_len), dtype=np.int32)
        for rank, answer in enumerate(answers):
            offset = 0
            for (_, ids), keep in zip(per_rank[rank], kept[rank]):
                out[keep] = answer[offset:offset + len(keep)]
                offset += len(ids)
        return out

    def train_step(self, batches: Sequence[Any], loss_name: str, **loss_args: Any) -> float:
        """One data-parallel step: rank r trains on `batches[r]`; the mean loss."""
        assert len(batches) == len(self.workers), "one batch per rank"
        losses = self._call([w.train_step.remote(b, loss_name, loss_args)
                             for w, b in zip(self.workers, batches)])
        return float(np.mean(losses))

    def _rows_per_pass(self, inputs: np.ndarray) -> int:
        """Rows per forward pass so that their logits stay within `_MAX_LOGITS` elements."""
        positions = public_task(self.info.task).positions(inputs)
        return max(1, _MAX_LOGITS // (max(1, int(self.info.num_classes)) * positions))

    def save(self, directory: str, tag: str) -> None:
        self._all("save", directory, tag)

    def load(self, directory: str, tag: str) -> None:
        self._all("load", directory, tag)

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        if self._owns_group:
            ray.util.remove_placement_group(self.placement_group)

    # ---- calling every rank -------------------------------------------------
    def _all(self, method: str, *args: Any) -> list:
        return self._call([getattr(w, method).remote(*args) for w in self.workers])

    def _call(self, refs: list) -> list:
        """Results of one call per rank, in rank order; the first failure ends the group."""
        import ray
        from ray.exceptions import RayError

        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except RayError as err:
                rank = refs.index(done[0])
                self.shutdown()  # peers may be blocked in a collective with the dead rank
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise FoundationError(f"foundation model rank {rank} failed: {type(err).__name__}: "
                                      f"{first}") from None
        return ray.get(refs)
