"""Pick the torch device from what Ray assigned to this process; never assume CUDA."""

from __future__ import annotations

import torch


def assigned_device() -> torch.device:
    """`cuda` if Ray gave this actor a GPU (Ray sets CUDA_VISIBLE_DEVICES), else `cpu`."""
    import ray

    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def limit_threads(num_cpus: float) -> None:
    """Use as many intra-op threads as CPUs were reserved (at least one), so that
    actors sharing a machine do not oversubscribe its cores."""
    torch.set_num_threads(max(1, int(num_cpus)))


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far, in MiB: what a CUDA device's allocator has
    handed out (`max_memory_allocated`) on a GPU, the process's peak resident set on CPU
    (Linux's `ru_maxrss`, in KiB). It includes the model load and every fit so far, which
    is what an actor needs reserved."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
