"""MkDocs hook: the pages generated from the code, pages brought in from elsewhere in the
repository, and a "How-to guides" section that lists every docs/guides/*.md.

Nothing generated is written to docs/: the references are rebuilt from the code on every
build, so they cannot drift, and a guide added to docs/guides/ appears without a nav edit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

HOOKS = Path(__file__).resolve().parent
sys.path.insert(0, str(HOOKS))

import code_reference  # noqa: E402
import config_reference  # noqa: E402

ROOT = HOOKS.parents[1]
GUIDES_SECTION = "How-to guides"
INCLUDED = {"benchmarks/README.md": "benchmarks.md", "cluster/README.md": "cluster-setup.md"}
"""Markdown files outside docs/ shown on the site (their links are rewritten for it)."""


def guide_pages(docs_dir: Path) -> list[str]:
    """Every guide on disk, as nav paths (`guides/x.md`)."""
    return sorted(f"guides/{p.name}" for p in (docs_dir / "guides").glob("*.md") if p.name != "index.md")


def _nav_paths(items) -> set[str]:
    found = set()
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found |= _nav_paths(value)
        else:
            found.add(value)
    return found


def on_config(config):
    """Append guides that the nav does not list yet (written by anyone, in any order)."""
    listed = _nav_paths(config["nav"])
    for item in config["nav"]:
        if isinstance(item, dict) and GUIDES_SECTION in item:
            item[GUIDES_SECTION] += [p for p in guide_pages(Path(config["docs_dir"])) if p not in listed]
    return config


def title_and_summary(path: Path) -> tuple[str, str]:
    """A page's `# title` and its first paragraph of prose."""
    title, paragraphs = path.stem, path.read_text(encoding="utf-8").split("\n\n")
    for block in paragraphs:
        if block.startswith("# "):
            title = block.splitlines()[0][2:].strip()
        elif block.strip() and not block.lstrip().startswith(("#", "|", "```", "!", "-", "<")):
            return title, " ".join(block.split())
    return title, ""


def guides_index(docs_dir: Path) -> str:
    out = ["# How-to guides", "", "One page per feature: what it does, the config keys that switch it on,",
           "a worked example and what it measures.", ""]
    for page in guide_pages(docs_dir):
        title, summary = title_and_summary(docs_dir / page)
        first = re.split(r"(?<![A-Z]\.)(?<!\bal\.)(?<!e\.g\.)(?<=[.!?])\s+(?=\S)", summary, maxsplit=1)[0]
        first = first if len(first) <= 240 else first[:first.rfind(" ", 0, 240)] + " …"
        out.append(f"- [{title}]({page.removeprefix('guides/')}): {first}")
    return "\n".join(out) + "\n"


def rewrite_links(text: str) -> str:
    """Links of a page from elsewhere in the repository, as seen from the site's root."""
    text = re.sub(r"\]\(\.\./docs/", "](", text)
    text = re.sub(r"\]\(\.\./README\.md(#[^)]*)?\)", "](index.md)", text)
    # other relative links leave the site: keep their text, name the file
    return re.sub(r"\[([^\]]*)\]\((\.\./[^)#]*)(#[^)]*)?\)", r"\1 (`\2`)", text)


SITE_PAGES = {"README.md": "index.md", **INCLUDED}
"""Repository files that have a page on the site, by repository path."""


def outside_links(markdown: str, page_uri: str, docs_dir: Path) -> str:
    """Links from a docs page to files outside docs/ (`../../README.md#x`, `../../configs/a.yaml`),
    as written for reading on the repository: to the file's page on the site where it has
    one, else the link's text with the repository path. A link to a file that does not
    exist is left alone, so the strict build still fails on it."""
    page_dir = (docs_dir / page_uri).parent

    def fix(match: re.Match) -> str:
        text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        resolved = (page_dir / target).resolve()
        if "://" in target or resolved.is_relative_to(docs_dir.resolve()) or not resolved.exists():
            return match.group(0)
        repo_path = resolved.relative_to(ROOT).as_posix()
        if repo_path in SITE_PAGES:
            site_page = docs_dir / SITE_PAGES[repo_path]
            anchor = "" if repo_path == "README.md" else anchor
            return f"[{text}]({Path(_relative(site_page, page_dir))}{anchor})"
        return f"{text} (`{repo_path}`)"

    return re.sub(r"(?<!!)\[([^\]]*)\]\(([^)#\s]+)(#[^)\s]*)?\)", fix, markdown)


def _relative(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)


def on_page_markdown(markdown, page, config, files):
    return outside_links(markdown, page.file.src_uri, Path(config["docs_dir"]))


def on_files(files, config):
    docs_dir = Path(config["docs_dir"])
    pages = {
        "reference/configuration.md": config_reference.render(),
        "reference/components.md": code_reference.render_components(),
        "reference/cli.md": code_reference.render_cli(),
        "guides/index.md": guides_index(docs_dir),
    }
    pages |= {dest: rewrite_links((ROOT / src).read_text(encoding="utf-8")) for src, dest in INCLUDED.items()}
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files
