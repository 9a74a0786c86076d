"""The server Ray actor: owns the global model and the client actors, runs rounds."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fedray.client.pool import ClientPool, actor_index
from fedray.config.load import to_yaml
from fedray.config.schema import RunConfig
from fedray.data.federated import FederatedDataset
from fedray.models.adapters import FoldedMerges, client_ranks, lora_layout
from fedray.models.build import build_model
from fedray.models.device import assigned_device, limit_threads
from fedray.models.flat import get_flat, param_spec, set_flat
from fedray.models.tasks import TASKS
from fedray.selection import SELECTORS
from fedray.server.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from fedray.server.loop import run_round
from fedray.server.rundir import RunDirectory
from fedray.server.state import ServerState
from fedray.strategy.lora import build_exchange
from fedray.strategy.presets import STRATEGIES
from fedray.types import RoundResult

logger = logging.getLogger("fedray.server")

_EVAL_BATCH = 1024


class Server:
    """Run as a Ray actor (`ray.remote(Server)`); the driver calls `run_round` per round.

    Components (strategy, selector, client pool) are built here once; everything
    that changes between rounds lives in `self.state`, which is what a
    checkpoint holds.
    """

    def __init__(self, cfg: RunConfig, dataset: FederatedDataset, run_dir: str, run_name: str):
        limit_threads(max(1.0, cfg.server.resources.num_cpus))
        self.cfg = cfg
        self.run_dir = RunDirectory(run_dir)
        self.device = assigned_device()
        peft = cfg.model.peft
        ranks = None if peft is None else client_ranks(peft, np.diff(dataset.offsets))
        # The client actors start first: they load their model while this one does.
        self.pool = ClientPool(cfg, dataset, run_name, ranks)
        self.task = TASKS.build(dataset.info.task)
        self.model = build_model(cfg.model, dataset.info, cfg.seed).to(self.device)
        self.spec = param_spec(self.model)
        self.test_data = self.task.prepare(dataset.test, self.device)
        self.strategy = STRATEGIES.build(cfg.server.strategy.name, cfg.server.strategy)
        self.selector = SELECTORS.build(cfg.server.selection.name, cfg.server.selection)
        self.layout = None if peft is None else lora_layout(self.spec, peft)
        self.exchange = build_exchange(
            cfg, self.spec.num_params, self.layout, ranks, lambda cid: actor_index(cid, cfg)
        )
        self.aggregator = self.exchange.aggregator
        self.merged = FoldedMerges()
        self.rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
        params = get_flat(self.model, self.spec)
        self.state = ServerState(
            server_round=0,
            params=params,
            strategy_state=self.strategy.init(params),
            selector_state=self.selector.init(cfg.clients.num_clients),
            rng_state=self.rng.bit_generator.state,
        )
        self.run_dir.write_config(to_yaml(cfg))

    # ---- called by the driver ------------------------------------------------
    def start(self) -> dict:
        """Wait for the client actors; a summary of where they run."""
        started = time.perf_counter()
        actors = self.pool.describe()
        return {
            "num_actors": len(actors),
            "num_nodes": len({a["node_id"] for a in actors}),
            "devices": sorted({a["device"] for a in actors}),
            "num_params": self.spec.num_params,
            "start_s": time.perf_counter() - started,
        }

    def resume_from(self, path: str) -> int:
        """Load a checkpoint (a file, or a run directory's newest); the round it holds."""
        candidate = Path(path)
        if candidate.is_dir():
            found = list_checkpoints(candidate / "checkpoints") or list_checkpoints(candidate)
            if not found:
                raise FileNotFoundError(f"no checkpoint under {candidate}")
            candidate = found[-1]
        self.state = load_checkpoint(candidate)
        self.rng.bit_generator.state = self.state.rng_state
        return self.state.server_round

    def run_round(self, server_round: int) -> tuple[RoundResult, list[str]]:
        assert server_round == self.state.server_round + 1, "rounds must run in order"
        result, failures = run_round(self, server_round)
        for note in failures:
            logger.warning(note)
            self.run_dir.log(note)
        self.state.rng_state = self.rng.bit_generator.state
        self.state.metrics.append(result.as_row())
        self.run_dir.write_metrics(self.state.metrics)
        every = self.cfg.server.checkpoint_every
        if every and (server_round % every == 0 or server_round == self.cfg.server.rounds):
            save_checkpoint(self.run_dir.checkpoints, self.state, self.cfg.server.keep_checkpoints)
        return result, failures

    def finish(self, status: str = "completed") -> dict:
        """Write summary.json and stop the client actors."""
        summary = summarize(self.state, status)
        self.run_dir.write_summary(summary)
        self.pool.shutdown()
        return summary

    def global_params(self) -> np.ndarray:
        return self.state.params

    # ---- used by the round ---------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if self.state.merges:
            self.merged.catch_up(self.model, self.layout, self.state.merges)
        set_flat(self.model, self.spec, self.state.params)
        self.model.eval()
        return self.task.evaluate(self.model, self.test_data, _EVAL_BATCH)


def summarize(state: ServerState, status: str) -> dict:
    """summary.json: how far the run got and the last evaluated metrics."""
    final = {}
    for row in reversed(state.metrics):
        if not np.isnan(row["eval_loss"]):
            final = {"loss": row["eval_loss"], "accuracy": row["eval_accuracy"],
                     "perplexity": row["eval_perplexity"], "round": row["round"]}
            break
    return {
        "status": status,
        "rounds_completed": state.server_round,
        "final_metrics": final,
        "rounds_wall_s": state.wall_s,
    }
