"""The documentation stays whole: every command in the README's table, every link alive.

Plain text checks (no torch, no model): the README's command table names each built-in
command and each plugged-in one; every relative link in README.md and docs/*.md points to
an existing file, and an ``#anchor`` to a heading of that file under GitHub's slug rules;
every page of docs/ is in mkdocs.yml's nav.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from frameqc.runtime.commands import COMMANDS, PLUGIN_GROUP

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def prose(text: str) -> list[tuple[int, str]]:
    """The numbered lines of a Markdown text outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped
    (letters, digits, ``_`` and ``-`` kept), each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = CODE_SPAN.sub(lambda m: m.group(2), text)
    text = re.sub(r"<[^>]+>", "", text).replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a page; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """The link targets of a page, with their line numbers (code spans and blocks left out)."""
    out = []
    for n, line in prose(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        out += [(n, target) for target in LINK.findall(line)]
    return out


def broken_links(path: Path) -> list[str]:
    """What is wrong with a page's relative links, one line each."""
    wrong = []
    for n, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: ... are not checked here
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        where = f"{path.relative_to(ROOT)}:{n}: {target}"
        if not dest.exists():
            wrong.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            wrong.append(f"{where}: no heading with that anchor")
    return wrong


def command_rows(text: str) -> dict[str, str]:
    """The README's command table: command name -> its row."""
    rows, inside = {}, False
    for _, line in prose(text):
        if line.startswith("## "):
            inside = line.strip() == "## Commands"
        elif inside:
            m = re.match(r"^\|\s*`(?:frameqc )?([\w-]+)`\s*\|", line)
            if m:
                rows[m.group(1)] = line
    return rows


def test_slug_follows_github():
    assert slug("Deploying on lt-qc (Docker)") == "deploying-on-lt-qc-docker"
    assert slug("2. How good is the model in use?") == "2-how-good-is-the-model-in-use"
    assert slug("Which frames: SOURCES") == "which-frames-sources"
    assert slug("The record: what each frame gets") == "the-record-what-each-frame-gets"
    assert slug("`frameqc info` and **the card**") == "frameqc-info-and-the-card"
    assert slug("fp32 or int8 — which") == "fp32-or-int8--which"


def test_every_command_has_a_row_with_a_link():
    names = set(COMMANDS) | {e.name for e in entry_points(group=PLUGIN_GROUP)} | {
        "export", "train"}
    rows = command_rows(README.read_text(encoding="utf-8"))
    assert sorted(names - set(rows)) == [], "commands missing from the README's table"
    unlinked = [name for name, row in rows.items() if not LINK.search(row)]
    assert unlinked == [], "command rows without a link to their docs"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_are_alive(page: Path):
    assert broken_links(page) == []


def test_every_page_is_in_the_nav():
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?(\S+\.md)\s*$", mkdocs, re.M))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert sorted(pages - nav) == [], "pages in docs/ missing from mkdocs.yml's nav"
    assert sorted(nav - pages) == [], "nav entries with no page"


def test_readme_is_a_front_door():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200
