"""User-code stand-ins reached through dotted config paths in tests."""

import time

import numpy as np

from fedray.data.partition import iid


def iid_with_an_empty_client(labels, num_clients, cfg, rng):
    """IID, except client 3 gets no examples, so its local training raises."""
    shards = iid(labels, num_clients, cfg, rng)
    shards[0] = np.sort(np.concatenate([shards[0], shards[3]]))
    shards[3] = shards[3][:0]
    return shards


TIMING = {"round_wall_s", "wall_s", "encode_s", "decode_s", "downlink_encode_s", "downlink_decode_s", "contribution_s"}


def untimed(rows):
    """metrics.parquet rows without the wall-clock columns, NaN made comparable
    (NaN != NaN, and rounds without an evaluation or distillation hold NaN)."""
    def value(v):
        return "nan" if isinstance(v, float) and v != v else v
    return [{k: value(v) for k, v in r.items() if k not in TIMING} for r in rows]


def seven_class_head(cfg, info):
    """A 'foundation model' whose output space (7 classes) differs from the clients' (10)."""
    import torch

    return torch.nn.Linear(info.num_features, 7)


def breaks_in_round_2():
    """A client transform with a bug that shows in round 2 (for the error-path tests)."""
    from fedray.transforms import UpdateTransform

    def apply(update, state, params, ctx):
        if ctx.server_round == 2:
            return update.nonexistent_method(), state
        return update, state

    return UpdateTransform(lambda params: (), apply)


def alive():
    """(live actors, placement groups holding resources), by id, from Ray's control store
    (the GCS): what the cluster itself says is still there."""
    import ray
    from ray._private.state import actors

    live = {a for a, info in actors().items() if info["State"] != "DEAD"}
    groups = {g for g, info in ray.util.placement_group_table().items() if info["state"] != "REMOVED"}
    return live, groups


def wait_for(condition, what, limit_s=120.0):
    """Poll until `condition()` holds; the limit only bounds a hang (it is not a timing)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.1)


def encodes_its_update():
    """A client transform that encodes (it has a decoder): what secure aggregation refuses."""
    from fedray.transforms import TRANSFORMS

    return TRANSFORMS.get("scale")(1.0)._replace(decode=lambda payload, ctx: payload)


def pause_when_marked(folder: str):
    """A client transform that holds a client mid-round so a test can kill its actor on a
    state instead of a timer: when `folder/go_r<round>_c<client>` exists, the client writes
    `folder/busy_r<round>_c<client>` and waits there (its actor is about to be killed). Only
    the first marked client of a round waits: after the restart, calls sent again go on."""
    import pathlib

    from fedray.transforms import UpdateTransform

    where = pathlib.Path(folder)

    def apply(update, state, params, ctx):
        tag = f"r{ctx.server_round}_c{ctx.client_id}"
        busy = where / f"busy_{tag}"
        if (where / f"go_{tag}").exists() and not any(where.glob(f"busy_r{ctx.server_round}_*")):
            busy.touch()
            deadline = time.monotonic() + 600  # only a hang guard: the test kills this actor
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return update, state

    return UpdateTransform(lambda params: (), apply)


def kill_when_busy(folder, server_round: int, client_ids, actor, stop=None):
    """Mark (round, client) for `pause_when_marked` for each of `client_ids` (the clients
    `actor` hosts), and from a thread kill `actor` (Ray restarts it) once one of them is
    held mid-round, or give up when `stop` is set. Returns the thread; its `killed` says
    whether the kill happened (the clients may never have run: the actor was restarting)."""
    import threading

    import ray

    tags = [f"r{server_round}_c{c}" for c in client_ids]
    for tag in tags:
        (folder / f"go_{tag}").touch()
    stop = stop or threading.Event()

    def watch():
        deadline = time.monotonic() + 600  # a hang guard, not a timing
        while not stop.is_set() and time.monotonic() < deadline:
            if any((folder / f"busy_{tag}").exists() for tag in tags):
                ray.kill(actor, no_restart=False)
                thread.killed = True
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.killed = False
    thread.start()
    return thread
