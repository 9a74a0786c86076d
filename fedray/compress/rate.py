"""Upload budgets for `rate: auto`: how many bytes each launched client may send.

The server knows each client's simulated device (compute speed, mean down and up
bandwidth: the profile it reported at registration) and what it is about to send
it. A client that must finish within T simulated seconds has

    upload_bytes = (T - download_s - compute_s) x up_bandwidth

to spend on its update; the continuous-rate codec then picks the largest l that
fits. T is `target_s` if the codec gives one, else `server.deadline_s`, else the
longest download + compute among the clients launched together: the round lasts
at least that long anyway, so faster clients fill the wait with a better update
and the slowest sends at the lowest rate. Budgets travel in the clients'
`FitInstructions.config` (`upload_bytes`), computed from the profiles' means (not
the per-transfer draws, which the server cannot know in advance).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from fedray.config.schema import RunConfig
from fedray.types import ClientId

BUDGET_KEY = "upload_bytes"
Instruct = Callable[[Mapping[ClientId, int]], "dict[ClientId, dict]"]
"""{client: bytes it downloads} -> {client: its per-round instructions}."""


def wants_budget(cfg: RunConfig) -> bool:
    """The client codec sizes its updates from the server's byte budget (`rate: auto`)."""
    return cfg.clients.codec.name == "gain" and cfg.clients.codec.args.get("rate") == "auto"


def upload_budgets(cfg: RunConfig, down_kbps: np.ndarray, up_kbps: np.ndarray,
                   compute_s: np.ndarray) -> Instruct:
    """The budget hook for the round (module docstring); `compute_s`: each client's
    expected compute seconds; bandwidths in kbit/s (inf: free transfers)."""
    target = cfg.clients.codec.args.get("target_s") or cfg.server.deadline_s

    def instruct(bytes_down: Mapping[ClientId, int]) -> dict[ClientId, dict]:
        busy = {c: _seconds(n, down_kbps[c]) + float(compute_s[c]) for c, n in bytes_down.items()}
        horizon = float(target) if target else max(busy.values(), default=0.0)
        return {c: {BUDGET_KEY: _bytes(horizon - busy[c], float(up_kbps[c]))} for c in busy}

    return instruct


def _bytes(seconds: float, kbps: float) -> float:
    """Bytes sent in `seconds` at `kbps` (1 kbit/s = 125 B/s); inf on a free link."""
    return math.inf if math.isinf(kbps) else max(0.0, seconds) * kbps * 125.0


def _seconds(num_bytes: int, kbps: float) -> float:
    return 0.0 if num_bytes == 0 or math.isinf(kbps) else num_bytes * 8e-3 / float(kbps)
