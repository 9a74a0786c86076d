"""Memory-aware packing: from a probe fit's peak (`fedray.client.probe`), what to reserve
per client actor, and which placements cannot fit.

Ray packs actors by the resources they ask for; fractions of a GPU limit scheduling,
not memory, so four actors at `num_gpus: 0.25` each run out of memory together when
one needs a third of the card. With `clients.resources.memory_gb: auto` a probe fit
(a fresh process, the clients' resources, `PROBE_STEPS` local steps on the largest
shard) measures what one actor needs before the run starts: its peak resident memory,
reserved as Ray's `memory` resource with `MARGIN`, and on a GPU its peak allocation,
against the card's size and how many actors `num_gpus` puts on one card.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping


PROBE_STEPS = 2
"""Local steps of the probe fit: the first step allocates the optimizer state, the
second shows the steady state."""
MARGIN = 1.2
"""Reserved memory over the measured peak: batches of other lengths, allocator slack."""
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What one probe fit measured, in bytes."""

    rss_peak: int
    """Peak resident memory of the probe's process (model, data, one fit)."""
    gpu_peak: int = 0
    """`torch.cuda.max_memory_allocated` (0 on CPU)."""
    gpu_total: int = 0
    """The GPU's memory (0 on CPU)."""


def reservation_gb(probe: ProbeResult) -> float:
    """GiB to reserve per client actor: the probe's peak with `MARGIN`, rounded up to 0.01."""
    return math.ceil(probe.rss_peak * MARGIN / GIB * 100) / 100


def packing_problems(probe: ProbeResult, num_actors: int, num_gpus: float,
                     node_memory: Mapping[str, float]) -> list[str]:
    """Why `num_actors` client actors of the probed size cannot all run at once (empty
    if they can). `node_memory`: each alive node's Ray `memory` resource, in bytes."""
    out = []
    need = reservation_gb(probe)
    fits = {node: int(total / GIB // need) for node, total in node_memory.items()}
    if sum(fits.values()) < num_actors:
        per_node = ", ".join(f"{node[:8]}: {total / GIB:.2f} GiB -> {fits[node]}"
                             for node, total in sorted(node_memory.items()))
        out.append(f"clients.resources.memory_gb=auto: a probe fit peaked at {probe.rss_peak / GIB:.2f} GiB, so "
                   f"each client actor reserves {need:.2f} GiB; {num_actors} actors need {num_actors * need:.2f} "
                   f"GiB but the nodes fit {sum(fits.values())} ({per_node}); use clients.placement=pool with "
                   f"clients.pool_size<={max(1, sum(fits.values()))}, or a smaller model/batch")
    if probe.gpu_total and num_gpus > 0:
        per_gpu = max(1, int(1 / num_gpus + 1e-9)) if num_gpus < 1 else 1
        fit = int(probe.gpu_total // max(1, probe.gpu_peak * MARGIN))
        if per_gpu > fit:
            out.append(f"clients.resources.num_gpus={num_gpus:g} puts {per_gpu} client actors on one GPU, but a "
                       f"probe fit peaked at {probe.gpu_peak / GIB:.2f} GiB of the GPU's {probe.gpu_total / GIB:.2f} "
                       f"GiB: {fit} fit with a {MARGIN - 1:.0%} margin; set clients.resources.num_gpus>="
                       f"{1 / max(1, fit):.3g}")
    return out
