"""What every worker of a Ray that fedray starts imports as it starts (`fedray.session.PRELOAD`).

It imports the client code (torch included) before any actor exists and, in a Ray
worker, keeps the garbage collector out of the way of those imports and of what they
made, which lives as long as the process:

- no collection runs during the imports (`gc.disable`): they make little garbage
  (~6,500 objects, ~1 MB, left once per worker), and the collections that would
  otherwise run cost ~0.3 s of the ~1.7 s of CPU the imports take;
- then what they made is set aside (`gc.freeze`): otherwise every full collection
  during an actor's start-up walks all of torch's and fedray's module objects again,
  ~0.15 s of CPU each time, ~0.45 s of the ~1.6 s a client actor's `__init__` and
  `load` take.

Objects made afterwards (the actors' models, shards, states) are collected as before.
Imported anywhere else (a test, a tool) it only imports the client code.
"""

from __future__ import annotations

import gc

import ray


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (not a driver, not a plain process)."""
    return getattr(ray._private.worker.global_worker, "mode", None) == ray.WORKER_MODE


_WORKER = in_ray_worker()
if _WORKER:
    gc.disable()
try:
    import fedray.client.actor  # noqa: E402,F401  (the client code every worker preloads)
finally:
    if _WORKER:
        gc.freeze()
        gc.enable()
