"""The run directory and atomic file writes.

Layout of `<output_dir>/<name>/`: config.yaml, metrics.parquet (a row per
round), clients.parquet (a row per client), summary.json, log.txt,
checkpoints/. Every file is written to a temporary name in the same directory
and renamed, so a crash never leaves a torn file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` and rename tmp over `path` (same filesystem, so atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet(path: Path, rows: Sequence[dict[str, Any]] | pa.Table) -> None:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def unique_run_dir(output_dir: str, name: str) -> Path:
    """`<output_dir>/<name>`, or `<name>-2`, `<name>-3`... if it already holds a run,
    so a second run never overwrites what a first one computed."""
    base = Path(output_dir) / name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


class RunDirectory:
    """Paths and writers for one run's outputs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.parquet"

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.path / "config.yaml", yaml_text)

    def write_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        write_parquet(self.metrics_path, rows)

    @property
    def clients_path(self) -> Path:
        return self.path / "clients.parquet"

    def write_clients(self, rows: Sequence[dict[str, Any]] | pa.Table) -> None:
        """clients.parquet: one row per client id (its profile; placement columns join on `client_id`)."""
        write_parquet(self.clients_path, rows)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, sort_keys=True))

    def log(self, line: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
