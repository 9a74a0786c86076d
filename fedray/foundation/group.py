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
from fedray.foundation.worker import WorkerSpec, ZeroWorker

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup


class FoundationError(RuntimeError):
    """The foundation model's worker group failed (a rank died or raised)."""


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
    if cfg.dtype is Dtype.bfloat16:
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
                resources=dict(cfg.resources.custom) or None, memory=cfg.resources.memory,
                max_restarts=0,  # a lost shard cannot be rebuilt in place: restart from a checkpoint
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.placement_group, placement_group_bundle_index=rank),
            ).remote(rank, cfg.num_workers, spec)
            for rank in range(cfg.num_workers)
        ]
        master = self._all("address")[0]
        self.ranks = self._all("setup", *master)

    # ---- the model, as one --------------------------------------------------
    def partition_numels(self) -> list[int]:
        return self._all("local_numel")

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Rank 0's logits for `inputs` (every rank joins the parameter gathers)."""
        return self._all("logits", inputs)[0]

    def train_step(self, batches: Sequence[Any], loss_name: str, **loss_args: Any) -> float:
        """One data-parallel step: rank r trains on `batches[r]`; the mean loss."""
        assert len(batches) == len(self.workers), "one batch per rank"
        losses = self._call([w.train_step.remote(b, loss_name, loss_args)
                             for w, b in zip(self.workers, batches)])
        return float(np.mean(losses))

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
