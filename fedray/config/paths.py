"""Whether a local folder named in a config can be created or written into."""

from __future__ import annotations

import os


def unwritable_folder(path: str) -> str | None:
    """Why this process cannot create or write into folder `path`, or None: its nearest
    existing ancestor is a file, or a folder this user may not write into."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None
