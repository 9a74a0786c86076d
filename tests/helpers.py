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


TIMING = {"round_wall_s", "wall_s", "encode_s", "decode_s", "downlink_encode_s", "downlink_decode_s", "contribution_s",
          "fed_eval_s"}


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


def draws_with_a_string_tag():
    """A client transform whose author passed a string tag to `ctx.rng` (tags are ints):
    the ValueError it raises is a bug in user code, not the client's failure."""
    from fedray.transforms import UpdateTransform

    def apply(update, state, params, ctx):
        return update + ctx.rng("noise").normal(size=update.shape).astype(update.dtype), state

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


def kept_states(run_dir, cfg):
    """Every client's current kept state, read from the run's client state store as its
    newest checkpoint names it (round and digest, checked)."""
    from fedray.client.pool import actor_index
    from fedray.client.store import StateCodec, StateStore, resolve_state_dir
    from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
    from fedray.server.serialize import decode, encode

    state = load_checkpoint(latest_checkpoint(f"{run_dir}/checkpoints"))
    where = resolve_state_dir(cfg.clients.state_dir, str(run_dir))
    return {cid: StateStore(where, actor_index(cid, cfg), StateCodec(encode, decode)).committed(cid, ref)
            for cid, ref in sorted(state.client_refs.items())}


def private_arrays_in_checkpoint(run_dir, states) -> list[str]:
    """Names of the tensors in the run's newest server checkpoint equal to an array of a
    client's kept state (`states`: `kept_states`); arrays of fewer than 2 values or all
    zeros are left out (they match by coincidence)."""
    import hashlib

    import torch
    from safetensors.torch import load

    from fedray.server.checkpoint import latest_checkpoint

    def arrays(value):
        if isinstance(value, torch.Tensor):
            value = value.numpy()
        if isinstance(value, np.ndarray) and value.dtype != object:
            if value.size >= 2 and np.any(value):
                yield hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
        elif isinstance(value, dict):
            for item in value.values():
                yield from arrays(item)
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from arrays(item)

    private = {h for kept in states.values() for h in arrays(kept)}
    assert private, "the clients keep no arrays: nothing to look for"
    path = latest_checkpoint(f"{run_dir}/checkpoints")
    tensors = load(open(path, "rb").read())
    return [name for name, t in tensors.items() if next(arrays(t), None) in private]


def stop_after_round_1(line):
    """A console hook: Ctrl-C (what it raises in the driver) once round 1 is reported."""
    if line.startswith("round 1/"):
        raise KeyboardInterrupt


def assert_resumes_exactly(make_config, root, warm=None, reference=None):
    """Run `make_config(folder)` uninterrupted (or take `reference`, the summary of such a
    run), and again stopped by Ctrl-C after round 1 then resumed: the same metrics
    (timings aside) and the same trained parameters, byte for byte. The config must
    checkpoint every round; `warm`: the `warm_actors` fixture."""
    import pytest

    from fedray.launcher import prepare, run
    from fedray.server.checkpoint import latest_checkpoint, load_checkpoint

    def quiet(line):
        pass

    if reference is None:
        reference = run(prepare(make_config(root / "ref")), console=quiet, warm=warm)
    cfg = make_config(root / "stopped")
    with pytest.raises(KeyboardInterrupt):
        run(prepare(cfg), console=stop_after_round_1, warm=warm)
    run_dir = cfg.output_dir + "/" + cfg.name
    assert len(pq_rows(run_dir)) == 1
    resumed = run(prepare(cfg), console=quiet, resume=run_dir, warm=warm)
    assert resumed["status"] == reference["status"] == "completed"
    assert untimed(pq_rows(run_dir)) == untimed(pq_rows(reference["run_dir"]))
    ours, theirs = (load_checkpoint(latest_checkpoint(f"{d}/checkpoints")) for d in (run_dir, reference["run_dir"]))
    assert ours.server_round == theirs.server_round == cfg.server.rounds
    assert ours.params.tobytes() == theirs.params.tobytes()
    return reference


def pq_rows(run_dir):
    """metrics.parquet's rows."""
    import pyarrow.parquet as pq

    return pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()


def driver_object_sizes(ray) -> list[int]:
    """Bytes of every object this process (the driver) holds a reference to, as the
    raylet reports them (what the object store and the driver's memory store hold)."""
    import os

    from ray._private.internal_api import node_stats

    node = next(n for n in ray.nodes() if n["Alive"] and n["NodeID"] == ray.get_runtime_context().get_node_id())
    reply = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=True)
    return [ref.object_size for stats in reply.core_workers_stats if stats.pid == os.getpid()
            for ref in stats.object_refs]


def wait_until_answers(actor, limit_s=900.0):
    """Block until a (restarting) actor answers a call; calls made while it restarts fail."""
    import ray
    from ray.exceptions import ActorUnavailableError

    deadline = time.monotonic() + limit_s
    while True:
        try:
            return ray.get(actor.describe.remote(), timeout=limit_s)
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise


def restart_when(console_prefix: str, actor_name: str):
    """A console hook that kills the named actor (Ray restarts it) when a line starts with
    `console_prefix`, and returns once the restarted actor answers: the round that follows
    meets an actor with nothing of its clients in memory."""
    import ray

    def hook(line: str) -> None:
        if line.startswith(console_prefix):
            actor = ray.get_actor(actor_name)
            ray.kill(actor, no_restart=False)
            wait_until_answers(actor)

    return hook
