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
        self.use_gpu = bool(ray.get_gpu_ids())
        if not self.use_gpu:
            # DeepSpeed picks its accelerator once, at first use: CPU with gloo here.
            os.environ["DS_ACCELERATOR"] = "cpu"
        self.engine = None

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port, for rank 0 to host the rendezvous."""
        import ray

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int) -> dict[str, Any]:
        """Join the process group, build the model sharded from the start, wrap it in DeepSpeed."""
        import deepspeed
        import torch

        from fedray.models.build import build_model
        from fedray.models.device import limit_threads

        limit_threads(self.spec.cfg.resources.num_cpus)
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        backend = "nccl" if self.use_gpu else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   timeout=datetime.timedelta(seconds=self.spec.cfg.timeout_s))
        cfg = self.spec.cfg
        # zero.Init partitions each parameter as it is created, so with stage 3 the
        # whole model never sits on one rank.
        with deepspeed.zero.Init(config_dict_or_path=self.spec.ds_config, enabled=cfg.zero_stage == 3):
            model = build_model(cfg.model, self.spec.info, self.spec.seed)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=self.spec.ds_config)
        return {"rank": self.rank, "backend": backend, "device": str(self.engine.device),
                "local_numel": self.local_numel(), "total_numel": self.total_numel()}

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

    def train_step(self, batch: Any, loss_name: str, loss_args: dict) -> float:
        """One optimizer step on this rank's share of the batch (data parallel)."""
        from fedray.foundation.distill import LOSSES

        self.engine.train()
        loss = LOSSES.build(loss_name, self.engine, self._to_device(batch), **loss_args)
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.detach().to("cpu"))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits for `inputs`; all ranks take part in gathering the parameters."""
        import torch

        self.engine.eval()
        with torch.no_grad():
            out = self.engine(torch.as_tensor(inputs, device=self.engine.device))
        out = getattr(out, "logits", out)
        return out.float().to("cpu").numpy()

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
        return torch.as_tensor(batch, device=self.engine.device)
