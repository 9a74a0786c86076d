"""What a run records of its clients besides metrics: the update ledger and per-round contributions.

`RunRecords` is the server's `RoundObserver` (`fedray.server.context`): after each
model update it sees the round's accepted updates and

- writes the ledger (`server.ledger`): `ledger/round_NNNNNN.parquet` for each
  recorded round (`fedray.lifecycle.ledger`), and the ledger's size so far as the
  `ledger_bytes` metrics column;
- values each aggregated client's update (`server.contribution`) on the server's
  held-out split, appends the values to the server state (so they are in every
  checkpoint) and rewrites contributions.parquet (a row per round and client);
  clients.parquet gets cumulative `contribution`, `rounds_valued` and `payout`.

On resume, ledger files of rounds after the checkpoint are deleted (those rounds
run again) and contributions.parquet is rewritten from the checkpoint's rows.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedray.config.schema import RunConfig, Utility
from fedray.lifecycle.contribution import CONTRIBUTIONS, RoundGame
from fedray.lifecycle.ledger import LEDGER_DIR, ledger_file_name, ledger_file_round, model_hash, round_table
from fedray.lifecycle.payout import client_columns
from fedray.server.context import RoundRecord
from fedray.server.rundir import RunDirectory, write_parquet
from fedray.server.state import ServerState
from fedray.types import Context, ParamSpec

CONTRIBUTIONS_FILE = "contributions.parquet"
_RNG_TAG = 0xC0471B


class RunRecords:
    """The ledger and contribution evaluation of a run (module docstring)."""

    def __init__(self, cfg: RunConfig, run_dir: RunDirectory, spec: ParamSpec,
                 evaluate: Callable[[np.ndarray], dict[str, float]]):
        """`evaluate(params)`: held-out metrics of the model with those parameters."""
        self.cfg = cfg
        self.ledger = cfg.server.ledger
        self.contribution = cfg.server.contribution
        self.valuer = (CONTRIBUTIONS.build_component("server.contribution", self.contribution)
                       if self.contribution.enabled else None)
        self.sizes = spec.sizes
        self.ledger_dir = run_dir.location / LEDGER_DIR
        self.contributions_path = run_dir.location / CONTRIBUTIONS_FILE
        self.evaluate = evaluate
        self.ledger_bytes = 0

    @property
    def active(self) -> bool:
        return self.ledger.enabled or self.valuer is not None

    def restore(self, state: ServerState) -> None:
        """Make the files match `state` (a checkpoint, or a fresh start)."""
        for location in self.ledger_dir.list():
            recorded = ledger_file_round(location.name)
            if recorded is not None and recorded > state.server_round:
                location.delete()
        self.ledger_bytes = int(state.metrics[-1].get("ledger_bytes", 0)) if state.metrics else 0
        if state.contributions:
            write_parquet(self.contributions_path, state.contributions)
        else:
            self.contributions_path.delete()

    # ---- RoundObserver -------------------------------------------------------
    def wants_updates(self, server_round: int) -> bool:
        return self.ledger.records(server_round) or self.valuer is not None

    def observe(self, record: RoundRecord, state: ServerState) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.ledger.enabled:
            if self.ledger.records(record.server_round):
                self._write_ledger(record, state)
            out["ledger_bytes"] = float(self.ledger_bytes)
        if self.valuer is not None and record.accepted:
            out.update(self._value(record, state))
        return out

    def client_columns(self, state: ServerState) -> dict[str, np.ndarray]:
        """clients.parquet's cumulative contribution columns (none without evaluation)."""
        if self.valuer is None:
            return {}
        return client_columns(state.contributions, self.cfg.clients.num_clients, self.contribution.budget)

    # ---- the two records -----------------------------------------------------
    def _write_ledger(self, record: RoundRecord, state: ServerState) -> None:
        table = round_table(record.server_round, record.accepted, model_hash(record.params_before),
                            model_hash(state.params), self.ledger.codec, self.sizes)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue()
        (self.ledger_dir / ledger_file_name(record.server_round)).write(lambda fh: fh.write(data))
        self.ledger_bytes += data.size

    def _value(self, record: RoundRecord, state: ServerState) -> dict[str, float]:
        started = time.perf_counter()
        clients, weights, updates = zip(*record.accepted)
        game = RoundGame(record.params_before, weights, updates, self._utility, self.valuer.normalize)
        rng = Context(record.server_round, None, self.cfg.seed).rng(_RNG_TAG)
        valuation = self.valuer.value(game, rng)
        empty, full = game.value(()), game.value(range(game.num_players))
        for cid, weight, value in zip(clients, weights, valuation.values):
            state.contributions.append({
                "round": record.server_round, "client_id": int(cid), "value": float(value),
                "weight": float(weight), "utility_before": empty, "utility_after": full,
                "method": self.contribution.name, "skipped": valuation.skipped,
            })
        write_parquet(self.contributions_path, state.contributions)
        return {"contribution_evaluations": float(game.evaluations),
                "contribution_s": time.perf_counter() - started}

    def _utility(self, params: np.ndarray) -> float:
        metrics = self.evaluate(params)
        return metrics["accuracy"] if self.contribution.utility is Utility.accuracy else -metrics["loss"]
