"""The exception for a cluster that cannot do what was asked (unreachable, busy, refused)."""

from __future__ import annotations


class ClusterError(ValueError):
    """A problem with the Ray cluster rather than the config; the CLI prints it and exits 2."""
