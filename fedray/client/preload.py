"""What every worker of a Ray that fedray starts imports as it starts (`fedray.session.PRELOAD`).

It imports the client code (torch included) before any actor exists, then, in a Ray
worker, tells the garbage collector that what those imports made lives as long as
the process (`gc.freeze`). Without that, every full collection during an actor's
start-up walks all of torch's and fedray's module objects again: with torch loaded
that is ~0.15 s of CPU each time, about 0.45 s of the ~1.6 s a client actor's
`__init__` and `load` take (three full collections). Objects made afterwards (the
actors' models, shards, states) are collected as before. Imported anywhere else (a
test, a tool) it only imports the client code.
"""

from __future__ import annotations

import gc

import ray

import fedray.client.actor  # noqa: F401  (the client code every worker preloads)


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (not a driver, not a plain process)."""
    return getattr(ray._private.worker.global_worker, "mode", None) == ray.WORKER_MODE


if in_ray_worker():
    gc.freeze()
