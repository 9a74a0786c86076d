"""Where a run's files live: a local path (the default) or a `pyarrow.fs` URI.

Local files are written atomically: to a temporary name in the same directory,
then renamed over the target, so a crash never leaves a torn file. On object
stores (`s3://`, `gs://`, `abfs://`, `hdfs://`, ...) an object becomes visible
only when its upload completes, so a file is built in memory and uploaded in
one piece: a reader sees the old object or the new one, never half of one.
Credentials for a store come from the usual environment of the process that
writes (the server actor), e.g. `AWS_*` variables passed with `fedray submit --env`.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Optional
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` and rename tmp over `path` (same filesystem, so atomic).

    The temporary file is created with mode 0666 less the umask, as `open()` would,
    not `mkstemp`'s 0600: results are meant to be read by teammates and tools."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> Path:
    """A new, empty hidden file beside `path` (O_EXCL: never someone else's)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def is_uri(where: str) -> bool:
    """`scheme://...` rather than a plain path."""
    return bool(_URI.match(where))


def join_uri(uri: str, *parts: str) -> str:
    """`s3://bucket/runs?region=x` + `exp` -> `s3://bucket/runs/exp?region=x`."""
    split = urlsplit(uri)
    path = posixpath.join(split.path or "/", *parts)
    query = f"?{split.query}" if split.query else ""
    return f"{split.scheme}://{split.netloc}{path}{query}"


@dataclasses.dataclass(frozen=True)
class Location:
    """A file or directory: a local path (`fs` is None) or a path on a pyarrow filesystem.

    Local locations are `os.PathLike`, so `Path(loc)` and `pq.read_table(loc)` work.
    """

    path: str
    """A local path as given, or the path inside `fs` (no scheme)."""
    uri: str
    """What the user wrote (or its child): shown in messages and passed between processes."""
    fs: Optional[pafs.FileSystem] = None

    @classmethod
    def parse(cls, where: "str | os.PathLike | Location") -> "Location":
        """A path or URI as given by the user (`file://` URIs count as local)."""
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        if not is_uri(text):
            return cls(text, text)
        fs, path = pafs.FileSystem.from_uri(text)
        if isinstance(fs, pafs.LocalFileSystem):  # file:// URIs get the atomic local writes
            return cls(path, text)
        return cls(path, text, fs)

    # ---- naming ---------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """On this machine's filesystem (atomic renames available)."""
        return self.fs is None

    @property
    def name(self) -> str:
        """The last path component."""
        return posixpath.basename(self.path.rstrip("/")) if self.fs else os.path.basename(self.path)

    def __truediv__(self, part: str) -> "Location":
        if self.fs is None and not is_uri(self.uri):
            joined = os.path.join(self.path, part)
            return Location(joined, joined)
        return Location(posixpath.join(self.path, part), join_uri(self.uri, part), self.fs)

    def sibling(self, name: str) -> "Location":
        """The file called `name` in the same directory."""
        if self.fs is None and not is_uri(self.uri):
            joined = os.path.join(os.path.dirname(self.path), name)
            return Location(joined, joined)
        split = urlsplit(self.uri)
        uri = split._replace(path=posixpath.join(posixpath.dirname(split.path), name)).geturl()
        return Location(posixpath.join(posixpath.dirname(self.path), name), uri, self.fs)

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        if self.fs is not None:
            raise TypeError(f"{self.uri} is not on the local filesystem")
        return self.path

    # ---- queries --------------------------------------------------------------
    def exists(self) -> bool:
        """A file or directory is there."""
        if self.fs is None:
            return os.path.exists(self.path)
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        """A directory (on object stores: a prefix that holds objects) is there."""
        if self.fs is None:
            return os.path.isdir(self.path)
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def list(self) -> list["Location"]:
        """Direct children, sorted by name; empty if this is not a directory."""
        if not self.is_dir():
            return []
        if self.fs is None:
            names = os.listdir(self.path)
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path))
            names = [posixpath.basename(info.path) for info in infos]
        return [self / n for n in sorted(names)]

    # ---- reading and writing --------------------------------------------------
    def read_bytes(self) -> bytes:
        """The whole file."""
        if self.fs is None:
            return Path(self.path).read_bytes()
        with self.fs.open_input_stream(self.path) as fh:
            return fh.read()

    def read_text(self) -> str:
        """The whole file as UTF-8 text."""
        return self.read_bytes().decode("utf-8")

    def mkdir(self) -> None:
        """Create this directory and its parents if missing."""
        if self.fs is None:
            os.makedirs(self.path, exist_ok=True)
        else:
            self.fs.create_dir(self.path, recursive=True)

    def write(self, write: Callable[[BinaryIO], None]) -> None:
        """Replace the file with what `write(fh)` writes; all or nothing (see module doc)."""
        if self.fs is None:

            def to_temp(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    write(fh)

            atomic_write(Path(self.path), to_temp)
            return
        buffer = pa.BufferOutputStream()
        write(buffer)
        data = buffer.getvalue()
        self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
        with self.fs.open_output_stream(self.path) as out:
            out.write(data)

    def write_text(self, text: str) -> None:
        """Replace the file with UTF-8 text, all or nothing."""
        self.write(lambda fh: fh.write(text.encode("utf-8")))

    def append_text(self, text: str) -> None:
        """Append; object stores cannot append, so there the (small) file is rewritten."""
        if self.fs is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
            return
        old = self.read_text() if self.exists() else ""
        self.write_text(old + text)

    def rename(self, target: "Location") -> None:
        """Move this file to `target` (on the same filesystem), replacing what is there."""
        if self.fs is None:
            os.replace(self.path, target.path)
        else:
            self.fs.move(self.path, target.path)

    def delete(self) -> None:
        """Remove the file if it is there."""
        if self.fs is None:
            Path(self.path).unlink(missing_ok=True)
        elif self.exists():
            self.fs.delete_file(self.path)
