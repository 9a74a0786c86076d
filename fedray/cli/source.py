"""The source run of `fedray unlearn` (only ever read), and what an unlearning method produced."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from fedray.config.errors import ConfigError
from fedray.config.load import load_run_config
from fedray.config.schema import RunConfig

if TYPE_CHECKING:
    import numpy as np

    from fedray.lifecycle.ledger import LedgerRound
    from fedray.server.rundir import Location
    from fedray.server.state_checks import RunShape

CLI = "command line"


@dataclasses.dataclass(frozen=True)
class SourceRun:
    """What unlearning reads from the source run directory."""

    where: Path
    cfg: RunConfig
    participation: dict[int, tuple[int, ...]]
    """Round -> the clients aggregated in it (metrics.parquet)."""
    allow_code: tuple[str, ...] = ()
    """`--allow-code`: the code its config may name (`fedray.config.trust`)."""

    @classmethod
    def load(cls, where: str, allow_code: tuple[str, ...] = ()) -> "SourceRun":
        from fedray.server.rundir import read_parquet

        path = Path(where)
        if not (path / "config.yaml").is_file() or not (path / "metrics.parquet").is_file():
            raise ConfigError([f"{where} is not a fedray run directory (needs config.yaml and metrics.parquet)"], CLI)
        metrics = read_parquet(path / "metrics.parquet").to_pydict()
        rounds = dict(zip(metrics["round"], (tuple(c) for c in metrics["clients"])))
        return cls(path, load_run_config(path / "config.yaml", allow_code), rounds, tuple(allow_code))

    @property
    def shape(self) -> "RunShape":
        """What its checkpoints must fit (its plug-ins' state types included)."""
        from fedray.server.state_checks import RunShape

        return RunShape.of(self.cfg)

    @property
    def config_path(self) -> str:
        return str(self.where / "config.yaml")

    def first_round(self, clients: set[int]) -> int:
        """The first round any of `clients` was aggregated in; ConfigError if none ever was."""
        took_part = sorted(r for r, members in self.participation.items() if clients & set(members))
        if not took_part:
            raise ConfigError([f"client(s) {sorted(clients)} never took part in {self.where}'s rounds; "
                               "there is nothing to unlearn"], CLI)
        return took_part[0]

    def checkpoints(self) -> dict[int, Location]:
        """Round -> complete checkpoint."""
        from fedray.server.checkpoint import list_checkpoints

        return {int(p.name[6:12]): p for p in list_checkpoints(self.where / "checkpoints")}

    def start_before(self, clients: set[int]) -> tuple[int, Location | None]:
        """The newest checkpoint untouched by `clients`: of a round before they were first
        aggregated, and (async mode) with none of them in flight. (its round, it), or (0, None)."""
        from fedray.server.checkpoint import load_checkpoint

        first = self.first_round(clients)
        for server_round, where in sorted(self.checkpoints().items(), reverse=True):
            if server_round < first and not clients & {f.client_id for f in load_checkpoint(where, self.shape).in_flight}:
                return server_round, where
        return 0, None

    def ledger(self) -> list[LedgerRound]:
        """Every recorded round, in order; ConfigError if there is no ledger or a file is unreadable."""
        from fedray.lifecycle.ledger import LEDGER_DIR, ledger_file_round, read_round
        from fedray.server.rundir import read_parquet

        folder = self.where / LEDGER_DIR
        files = sorted(p for p in folder.glob("round_*.parquet") if ledger_file_round(p.name) is not None)
        if not files:
            raise ConfigError([f"{self.where} has no update ledger ({folder} is empty or missing: the run had "
                               "server.ledger.every=0); federaser rebuilds the model from it. Use --method retrain, "
                               "or record one with server.ledger.every=N"], CLI)
        rounds = []
        for path in files:
            try:
                rounds.append(read_round(read_parquet(path), str(path)))
            except (ValueError, OSError) as err:
                raise ConfigError([f"the ledger does not match the run: {err}"], CLI) from None
        return rounds


@dataclasses.dataclass(frozen=True)
class Unlearned:
    """What a method produced."""

    run_dir: Location
    start_round: int
    """The round whose model it rebuilt from (0: the initial model)."""
    rounds_run: int
    """Rounds of client training it needed."""
    params: np.ndarray
    status: str = "completed"


def state_codec(cfg: RunConfig):
    """The client stores' codec of a run (its plug-ins' state classes too)."""
    import functools

    from fedray.client.store import StateCodec
    from fedray.server.serialize import decode, encode
    from fedray.server.state_types import StateTypes

    types = StateTypes.of(cfg)
    return StateCodec(functools.partial(encode, types=types), functools.partial(decode, types=types))


def carry_client_states(source: SourceRun, forget: set[int], target: Path, cfg: RunConfig, state) -> int:
    """Copy into the unlearned run's client state store the files its checkpoint `state`
    names, without the forgotten clients' states (a resume reads them there)."""
    from fedray.client.forget import carry_states
    from fedray.client.store import resolve_state_dir
    from fedray.server.loop import store_rounds_of

    return carry_states(resolve_state_dir(source.cfg.clients.state_dir, str(source.where)),
                        resolve_state_dir(cfg.clients.state_dir, str(target)), state_codec(source.cfg),
                        store_rounds_of(state), forget)


def forget_client_states(source: SourceRun, forget: set[int]) -> str | None:
    """Delete the forgotten clients' kept states from the source run's client state store
    (their right to be forgotten); a line saying what went, or None if nothing did."""
    from fedray.client.forget import forget_clients
    from fedray.client.store import resolve_state_dir

    where = resolve_state_dir(source.cfg.clients.state_dir, str(source.where))
    gone = forget_clients(where, state_codec(source.cfg), forget)
    if gone == (0, 0):
        return None
    return (f"fedray unlearn: deleted client(s) {sorted(forget)}'s kept state from {where} "
            f"({gone.rewritten} file(s) rewritten, {gone.deleted} deleted)")
