"""One rank of the server's foundation model: a Ray actor running a DeepSpeed engine.

Each worker joins a torch.distributed process group with its peers (NCCL when
Ray gave it a GPU, gloo on CPUs with DeepSpeed's CPU accelerator) and holds its
ZeRO shard for the whole run. Under ZeRO-3 every forward and backward gathers
parameters collectively, so every method that runs the model is called on all
ranks at once by `FoundationGroup`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from typing import Any

import numpy as np

from fedray.config.schema import FoundationConfig
from fedray.data.federated import DataInfo


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    cfg: FoundationConfig
    info: DataInfo
    seed: int
    ds_config: dict


class ZeroWorker:
    def __init__(self, rank: int, world_size: int, spec: WorkerSpec):
        import ray

        import warnings

        # DeepSpeed still calls torch.distributed's deprecated collective names every step
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
        self.rank, self.world_size, self.spec = rank, world_size, spec
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.use_gpu = bool(self.gpu_ids)
        if not self.use_gpu:
            # DeepSpeed picks its accelerator once, at first use: CPU with gloo here.
            os.environ["DS_ACCELERATOR"] = "cpu"
        self.engine = None

    def address(self) -> dict[str, Any]:
        """This node's IP, a free port (for rank 0 to host the rendezvous) and the GPUs
        Ray assigned, so that the group can see whether ranks share a GPU."""
        import ray

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        return {"ip": ray.util.get_node_ip_address(), "port": port, "gpu_ids": self.gpu_ids,
                "node_id": ray.get_runtime_context().get_node_id()}

    def setup(self, master_addr: str, master_port: int) -> dict[str, Any]:
        """Join the process group, build the model sharded from the start, wrap it in DeepSpeed."""
        import deepspeed

        from fedray.models.device import limit_threads

        limit_threads(self.spec.cfg.resources.num_cpus)
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        backend = "nccl" if self.use_gpu else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   timeout=datetime.timedelta(seconds=self.spec.cfg.timeout_s))
        ds_config = resolve_precision(self.spec.ds_config, self.spec.cfg, self.use_gpu)
        model = self._build(ds_config)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=ds_config)
        return {"rank": self.rank, "backend": backend, "device": str(self.engine.device),
                "gpu_ids": self.gpu_ids, "dtype": str(next(model.parameters()).dtype),
                "local_numel": self.local_numel(), "total_numel": self.total_numel()}

    def _build(self, ds_config: dict):
        """The model, each parameter partitioned as it is created under ZeRO-3, so the
        whole model never sits on one rank."""
        import deepspeed
        import torch._dynamo  # noqa: F401  (importing it inside zero.Init's patched constructors fails)

        from fedray.models.build import build_model

        cfg = self.spec.cfg
        if cfg.model.path is not None or cfg.model.config:
            # transformers must know about ZeRO-3 to load a checkpoint into partitioned
            # parameters (and to initialise them); it reads this object while it lives.
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_deepspeed = HfDeepSpeedConfig(ds_config)
        with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=cfg.zero_stage == 3):
            return build_model(cfg.model, self.spec.info, self.spec.seed)

    def local_numel(self) -> int:
        """Parameters (ZeRO-3) or fp32 master weights (ZeRO-1/2) this rank holds."""
        params = list(self.engine.module.parameters())
        if self.spec.cfg.zero_stage == 3:
            return int(sum(p.ds_tensor.numel() for p in params))
        groups = self.engine.optimizer.single_partition_of_fp32_groups
        return int(sum(g.numel() for g in groups))

    def total_numel(self) -> int:
        params = list(self.engine.module.parameters())
        return int(sum(getattr(p, "ds_numel", p.numel()) for p in params))

    # ---- collective work: every rank calls these together ----------------------
    def train_step(self, batch: Any, loss_name: str, loss_args: dict) -> float:
        """One optimizer step on this rank's share of the batch (data parallel)."""
        from fedray.foundation.distill import LOSSES

        self.engine.train()
        batch = self._to_device(batch)
        loss = LOSSES.build(loss_name, self.engine, batch, task=self.spec.info.task, **loss_args)
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.detach().to("cpu"))

    def top_k(self, inputs: np.ndarray, k: int, temperature: float, rows_per_pass: int):
        """(values, indices) of the top-k distribution at temperature T on this rank's rows
        of the public set, in passes of `rows_per_pass` rows (as many passes on every rank)."""
        import torch

        from fedray.foundation.distill import top_k_torch
        from fedray.foundation.public import public_task

        view, values, indices = public_task(self.spec.info.task), [], []
        self.engine.eval()
        with torch.no_grad():
            for start in range(0, len(inputs), rows_per_pass):
                logits, _ = view.forward(self.engine, self._to_device(inputs[start:start + rows_per_pass]))
                kept = top_k_torch(logits, k, temperature)
                values.append(kept.values)
                indices.append(kept.indices)
        return np.concatenate(values), np.concatenate(indices)

    def kd_loss(self, batch: dict, temperature: float, rest_mass: bool, rows_per_pass: int) -> np.ndarray:
        """float64 [rows, 2]: per row of the batch, the KD loss summed over its counted
        positions, and their number."""
        import torch

        from fedray.foundation.distill import TopK, kd_terms
        from fedray.foundation.public import public_task

        view, out = public_task(self.spec.info.task), []
        self.engine.eval()
        with torch.no_grad():
            for start in range(0, len(batch["inputs"]), rows_per_pass):
                part = self._to_device({k: v[start:start + rows_per_pass] for k, v in batch.items()})
                logits, mask = view.forward(self.engine, part["inputs"])
                target = TopK(part["teacher_values"], part["teacher_indices"])
                kl = kd_terms(logits, target, temperature, rest_mass)
                mask = torch.ones_like(kl) if mask is None else mask.to(kl.dtype)
                per_row = [(kl * mask).reshape(len(kl), -1).sum(1), mask.reshape(len(kl), -1).sum(1)]
                out.append(torch.stack(per_row, 1).double().to("cpu").numpy())
        return np.concatenate(out)

    def generate(self, jobs: list[tuple[np.ndarray, np.ndarray]], seq_len: int, temperature: float,
                 top_p: float, seed: int) -> np.ndarray:
        """Sample this rank's rows: for each (prefix, row ids) job, in order; int32 rows."""
        from fedray.foundation.sampling import sample_rows

        self.engine.eval()
        out = [sample_rows(self.engine, prefix, rows, seq_len, temperature, top_p, seed, self.engine.device)
               for prefix, rows in jobs]
        return np.concatenate(out)

    def save(self, directory: str, tag: str) -> None:
        self.engine.save_checkpoint(directory, tag=tag)

    def load(self, directory: str, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(directory, tag=tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint '{tag}' under {directory}")

    def _to_device(self, batch: Any) -> Any:
        import torch

        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return torch.as_tensor(np.array(batch), device=self.engine.device)  # Ray's arrays are read-only


def resolve_precision(ds_config: dict, cfg: FoundationConfig, use_gpu: bool) -> dict:
    """`dtype: null` means bfloat16 on GPUs that support it and float32 elsewhere."""
    if cfg.dtype is not None or not use_gpu or "bf16" in ds_config or "fp16" in ds_config:
        return ds_config
    import torch

    return {**ds_config, "bf16": {"enabled": True}} if torch.cuda.is_bf16_supported() else ds_config
