"""The run directory: one run's outputs, on a local path or a `pyarrow.fs` URI.

Layout of `<output_dir>/<name>/`: config.yaml, metrics.parquet (a row per
round), clients.parquet (a row per client: where it ran), evaluation.parquet (a row
per round, evaluating client and model, with `server.evaluation.where: clients`), summary.json,
log.txt, checkpoints/. Every file is replaced whole (see `storage`), so a crash
never leaves a torn file behind.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from fedray.server.storage import Location, atomic_write

_RESUME_CONFIG = re.compile(r"^config\.resume-(\d+)\.yaml$")

__all__ = ["Location", "RunDirectory", "atomic_write", "read_parquet", "unique_run_dir", "write_parquet"]


# Parquet goes through Arrow's own files and buffers, never a Python file object:
# reading one (`pq.read_table(io.BytesIO(...))`) leaves Arrow I/O threads holding it
# after the call returns; when the interpreter exits first, such a thread needs the
# GIL, is ended by Python's finalizer mid-destructor, and the process aborts with
# "terminate called without an active exception" (seen after `fedray report`).


def write_parquet(where: Location | str | os.PathLike, rows: Sequence[dict[str, Any]] | pa.Table,
                  **options: Any) -> None:
    """Rows (dicts with the same keys) or a table as one Parquet file, replaced whole;
    `options` go to `pyarrow.parquet.write_table`."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    data = sink.getvalue()
    Location.parse(where).write(lambda fh: fh.write(data))


def read_parquet(where: Location | str | os.PathLike) -> pa.Table:
    """A Parquet file from a local path or a URI; ValueError naming it if it is not one."""
    location = Location.parse(where)
    try:
        return pq.read_table(location.path, filesystem=location.fs)
    except pa.ArrowInvalid as err:  # Arrow names its input source, not the run's file
        reason = str(err).split("': ", 1)[-1]
        raise ValueError(f"{location} is not a readable Parquet file: {reason}") from None


def unique_run_dir(output_dir: str, name: str) -> Location:
    """`<output_dir>/<name>`, or `<name>-2`, `<name>-3`... if it already holds a run,
    so a second run never overwrites what a first one computed."""
    base = Location.parse(output_dir)
    candidate, n = base / name, 1
    while candidate.list():
        n += 1
        candidate = base / f"{name}-{n}"
    return candidate


class RunDirectory:
    """Paths and writers for one run's outputs."""

    def __init__(self, where: Location | str | os.PathLike):
        self.location = Location.parse(where)
        self.checkpoints = self.location / "checkpoints"

    @property
    def metrics_path(self) -> Location:
        return self.location / "metrics.parquet"

    @property
    def clients_path(self) -> Location:
        """clients.parquet: one row per client id."""
        return self.location / "clients.parquet"

    def config_files(self) -> list[Location]:
        """config.yaml, then each resume's config.resume-N.yaml in order: the newest is the
        run's current configuration."""
        found = {int(m.group(1)): p for p in self.location.list() if (m := _RESUME_CONFIG.match(p.name))}
        first = self.location / "config.yaml"
        return ([first] if first.exists() else []) + [found[n] for n in sorted(found)]

    def write_config(self, yaml_text: str) -> None:
        """config.yaml: the configuration the run started with, written once."""
        (self.location / "config.yaml").write_text(yaml_text)

    def write_resume_config(self, yaml_text: str) -> Location:
        """config.resume-N.yaml (N = 1, 2, ...): the configuration a resume continued with."""
        numbers = [int(m.group(1)) for p in self.location.list() if (m := _RESUME_CONFIG.match(p.name))]
        where = self.location / f"config.resume-{max(numbers, default=0) + 1}.yaml"
        where.write_text(yaml_text)
        return where

    def write_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """metrics.parquet: a row per round; a column some rounds lack (a personal model's
        evaluation before any client had one) is null there."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        write_parquet(self.metrics_path, [{key: row.get(key) for key in columns} for row in rows])

    def write_evaluation(self, rows: Sequence[dict[str, Any]]) -> None:
        """evaluation.parquet: a row per round, evaluating client and model (federated evaluation)."""
        if rows:
            write_parquet(self.location / "evaluation.parquet", rows)

    def write_clients(self, rows: Sequence[dict[str, Any]] | pa.Table) -> None:
        """clients.parquet: one row per client id (where it ran; later, its profile).
        Rewritten every round, so without column statistics and dictionaries (a
        100,000-row file in a few tens of milliseconds instead of a tenth of a second)."""
        write_parquet(self.clients_path, rows, use_dictionary=False, write_statistics=False)

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.location / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))

    def log(self, line: str) -> None:
        (self.location / "log.txt").append_text(line.rstrip("\n") + "\n")
