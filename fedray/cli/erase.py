"""`fedray unlearn --method federaser`: the ledger checked against its run, calibration rounds
on the remaining clients' actors, and the new run directory.

The algorithm is `fedray.lifecycle.federaser`; this module gives it its training
(the run's client actors, with `train.local_steps` cut to the calibration budget)
and its server step (the run's server chain), and writes what a run writes:
config.yaml, metrics.parquet (the rows of the rounds before the rebuild, then one
per replayed round, `calibrated` saying whether it trained), a checkpoint of the
source's last round with the unlearned model (so `fedray run --resume` continues
without the forgotten clients), summary.json and log.txt.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from fedray.cli.source import CLI, SourceRun, Unlearned, carry_client_states
from fedray.config.errors import ConfigError
from fedray.config.load import to_yaml
from fedray.config.schema import RunConfig
from fedray.lifecycle.backdoor import Probe
from fedray.lifecycle.federaser import ErasedRound, federaser
from fedray.lifecycle.ledger import LEDGER_DIR, LedgerRound, ledger_file_name, model_hash
from fedray.server.checkpoint import load_checkpoint, save_checkpoint
from fedray.server.state_types import StateTypes
from fedray.server.rundir import RunDirectory, unique_run_dir
from fedray.strategy.algorithm import Algorithm, build_algorithm
from fedray.types import Context, RoundResult

if TYPE_CHECKING:
    from fedray.client.pool import ClientPool
    from fedray.launcher import PreparedRun


def run_federaser(source: SourceRun, forget: set[int], prepared: "PreparedRun", ratio: float) -> Unlearned:
    """Check, rebuild from the ledger, write the new run directory."""
    from fedray.client.pool import ClientPool
    from fedray.launcher import ray_session, run_key

    cfg = prepared.cfg
    probe = Probe(cfg, prepared.dataset.info, prepared.dataset.test)
    rounds = source.ledger()
    algorithm = build_algorithm(cfg)
    problems = ledger_problems(source, rounds, probe) + plain_training_problems(cfg, algorithm, probe.initial)
    checkpoints = source.checkpoints()
    if not checkpoints:
        problems.append(f"{source.where} has no checkpoint: federaser writes the unlearned model into a copy "
                        "of the source's last one")
    if problems:
        raise ConfigError(problems, CLI)
    start, where = source.start_before(forget)
    begin = load_checkpoint(where, source.shape) if where is not None else None
    params = begin.params if begin is not None else probe.initial
    target = unique_run_dir(cfg.output_dir, cfg.name)
    target.mkdir()
    run_dir = RunDirectory(target)
    run_dir.write_config(to_yaml(cfg))
    calibration = calibration_config(cfg, np.diff(prepared.dataset.offsets), ratio)
    run_dir.log(f"federaser: forgetting clients {sorted(forget)} from round {start}; calibration trains "
                f"train.local_steps={calibration.train.local_steps}")
    with ray_session(cfg):
        pool = ClientPool(calibration, prepared.dataset, f"fedray/{run_key(target)}/federaser")
        try:
            pool.describe()
            rebuild = Rebuild(cfg, algorithm, pool, probe, run_dir, begin)
            params = federaser(params, [r for r in rounds if r.server_round > start], forget,
                               rebuild.calibrate, rebuild.step, rebuild.record)
        finally:
            pool.shutdown()
    final = load_checkpoint(checkpoints[max(checkpoints)], source.shape)
    write_result(run_dir, final, params, rebuild, forget, cfg.server.keep_checkpoints, source.shape.types)
    carry_client_states(source, forget, target, cfg, final)
    return Unlearned(target, start, rebuild.calibrated, params)


def write_result(run_dir: RunDirectory, final, params: np.ndarray, rebuild: "Rebuild", forget: set[int],
                 keep: int, types: "StateTypes") -> None:
    """A checkpoint of the source's last round holding the unlearned model (nothing of the
    forgotten clients: their kept state and values are dropped), and summary.json."""
    from fedray.server.summary import summarize

    state = dataclasses.replace(
        final, params=params, transform_state=rebuild.transform_state, metrics=rebuild.rows, in_flight=[],
        client_refs={c: s for c, s in final.client_refs.items() if c not in forget},
        contributions=[row for row in final.contributions if row["client_id"] not in forget])
    save_checkpoint(run_dir.checkpoints, state, keep, types)
    run_dir.write_summary(summarize(state, "completed"))


def ledger_problems(source: SourceRun, rounds: list[LedgerRound], probe: Probe) -> list[str]:
    """Where the ledger disagrees with its run: the model's size, a round's clients, the
    model hashes (the initial model's, and every kept checkpoint's)."""
    problems = []
    known = {0: model_hash(probe.initial)}
    known.update({r: model_hash(load_checkpoint(p, source.shape).params) for r, p in source.checkpoints().items()})
    for stored in rounds:
        name = f"{source.where / LEDGER_DIR / ledger_file_name(stored.server_round)}"
        if stored.layer_sizes != probe.spec.sizes:
            problems.append(f"{name}: updates of {stored.num_params} parameters, but the run's model has "
                            f"{probe.spec.num_params} (tensor sizes differ)")
        recorded = source.participation.get(stored.server_round)
        if recorded is None:
            problems.append(f"{name}: round {stored.server_round} is not in metrics.parquet")
        elif tuple(recorded) != stored.clients:
            problems.append(f"{name}: clients {list(stored.clients)}, but metrics.parquet aggregated "
                            f"{list(recorded)} in round {stored.server_round}")
        if known.get(stored.server_round - 1, stored.base_hash) != stored.base_hash:
            problems.append(f"{name}: starts from another model than the run's round {stored.server_round - 1}")
        if known.get(stored.server_round, stored.model_hash) != stored.model_hash:
            problems.append(f"{name}: ends with another model than the run's checkpoint of round "
                            f"{stored.server_round}")
    return [f"the ledger does not match the run: {p}" for p in problems]


def plain_training_problems(cfg: RunConfig, algorithm: Algorithm, params: np.ndarray) -> list[str]:
    """Calibration is plain local training from the global parameters: no payloads besides them."""
    problems = []
    if cfg.server.foundation_model.model is not None:
        problems.append("federaser rebuilds the clients' model only, not server.foundation_model; "
                        "use --method retrain")
    ctx = Context(1, None, cfg.seed, cfg.clients.num_clients)
    if any(t.reducers(params.size) or t.downlink(t.init_server(params), ctx) for t in algorithm.terms):
        problems.append(f"federaser calibrates with plain local training, but server.strategy="
                        f"{cfg.server.strategy.name!r} (or clients.objective) exchanges payloads besides the "
                        "parameters; use --method retrain")
    return problems


def calibration_config(cfg: RunConfig, num_examples: np.ndarray, ratio: float) -> RunConfig:
    """The run's config with `train.local_steps` cut to `ratio` of a typical client's local
    steps per round (the median shard's, with `train.local_epochs`)."""
    train = cfg.train
    if train.local_steps is not None:
        steps = train.local_steps
    else:
        batches = math.ceil(float(np.median(num_examples)) / train.batch_size)
        steps = train.local_epochs * max(1, math.ceil(batches / train.grad_accum_steps))
    return dataclasses.replace(cfg, train=dataclasses.replace(train, local_steps=max(1, math.ceil(ratio * steps))))


class Rebuild:
    """FedEraser's callbacks: calibration on the actors, the server step, a metrics row per step."""

    def __init__(self, cfg: RunConfig, algorithm: Algorithm, pool: "ClientPool", probe: Probe,
                 run_dir: RunDirectory, begin):
        self.cfg, self.algorithm, self.pool, self.probe, self.run_dir = cfg, algorithm, pool, probe, run_dir
        params = begin.params if begin is not None else probe.initial
        self.transform_state = (begin.transform_state if begin is not None
                                else algorithm.server_transforms.init(params))
        self.rows = list(begin.metrics) if begin is not None else []
        self.wall_s = 0.0
        self.calibrated = 0
        self._started = time.perf_counter()
        self._losses: list[tuple[float, int]] = []
        self._bytes = [0, 0]

    def calibrate(self, server_round: int, params: np.ndarray, clients: list[int]) -> dict[int, np.ndarray]:
        import ray

        from fedray.server.loop import client_seed
        from fedray.strategy.exchange import Send
        from fedray.types import FitInstructions

        send = Send({"params": ray.put(params)}, int(params.nbytes))
        # calibration trains from each client's initial state and commits nothing (FedEraser's
        # calibration updates only set the direction of the stored ones)
        pending = {cid: self.pool.fit(FitInstructions(server_round, cid, client_seed(self.cfg.seed, server_round, cid)),
                                      send) for cid in clients}
        out = {}
        for cid, ref in pending.items():
            result = ray.get(ref)
            self._bytes = [self._bytes[0] + result.num_bytes, self._bytes[1] + send.num_bytes]
            if not result.ok:
                self.run_dir.log(f"federaser round {server_round}: client {cid} failed calibration: {result.error}")
                continue
            ctx = Context(server_round, cid, self.cfg.seed, self.cfg.clients.num_clients)
            out[cid] = np.asarray(self.algorithm.decode(result.update, ctx), np.float32)
            self._losses.append((result.train_loss, result.num_examples))
        return out

    def step(self, params: np.ndarray, aggregate: np.ndarray, server_round: int) -> np.ndarray:
        ctx = Context(server_round, None, self.cfg.seed, self.cfg.clients.num_clients)
        step, self.transform_state = self.algorithm.server_transforms.apply(
            aggregate, self.transform_state, params, ctx)
        return params + step

    def record(self, erased: ErasedRound) -> None:
        now = time.perf_counter()
        round_s, self._started = now - self._started, now
        self.wall_s += round_s
        self.calibrated += int(erased.calibrated)
        evaluation = self.probe.metrics(erased.params)
        examples = sum(n for _, n in self._losses)
        nan = float("nan")
        row = RoundResult(
            server_round=erased.server_round, clients_selected=len(erased.clients),
            clients_succeeded=len(erased.clients), clients_failed=0, updates_rejected=0, attempts=1,
            train_loss=sum(v * n for v, n in self._losses) / examples if examples else nan,
            eval_loss=evaluation.get("loss", nan), eval_accuracy=evaluation.get("accuracy", nan),
            eval_perplexity=evaluation.get("perplexity", nan), bytes_up=self._bytes[0], bytes_down=self._bytes[1],
            round_wall_s=round_s, wall_s=self.wall_s, clients=erased.clients,
            metrics={"calibrated": float(erased.calibrated)},
        ).as_row()
        self.rows.append(row)
        columns = list(dict.fromkeys(key for r in self.rows for key in r))  # rows before the rebuild lack some
        self.run_dir.write_metrics([{key: r.get(key) for key in columns} for r in self.rows])
        self._losses, self._bytes = [], [0, 0]
