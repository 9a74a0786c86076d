"""The documentation's Markdown files and the fenced blocks in them, for the docs tests.

A block may be marked by an HTML comment on the line just before its fence (invisible on
the site and on GitHub):

- `<!-- snippet: fragment -->` / `<!-- snippet: fragment of configs/x.yaml -->`: a YAML
  block that is part of a config, checked merged onto that base (default: the quickstart);
- `<!-- snippet: not a fedray config -->`: YAML of another tool (Kubernetes, Ray);
- `<!-- snippet: site config -->`: a site agent's YAML (`fedray site serve SITE.yaml`);
- `<!-- output: real run ... -->` / `<!-- output: abridged ... -->`: sample console output,
  copied from a real run (say which and when) or shortened by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

ROOT = Path(REPO)
MARKER = re.compile(r"<!--\s*(snippet|output):\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def doc_files() -> list[Path]:
    """Every Markdown page a user reads: the README, the site's pages, the other READMEs."""
    files = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "cluster" / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "examples").glob("*/README.md"))
    return [f for f in files if f.is_file()]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str
    marker: tuple[str, str] | None  # ("snippet" | "output", what it says)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one file, with the marker comment just before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = MARKER.search(before)
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        found.append(Block(path, i + 1, lang.lower(), body, marked.groups() if marked else None))
        i = end + 1
    return found


def all_blocks(*langs: str) -> list[Block]:
    return [b for f in doc_files() for b in blocks(f) if not langs or b.lang in langs]


def shell_lines(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", block.text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") or not line:
            continue
        out.append(re.sub(r"\s+#.*$", "", line))
    return out
