"""The one exception type for user mistakes in configuration or input files."""

from __future__ import annotations


class ConfigError(ValueError):
    """Every problem found in a config, reported together, each naming its key.

    The CLI prints `str(err)` and exits with status 2; no traceback is shown.
    """

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid configuration{where}:\n{lines}")
