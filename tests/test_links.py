"""The README stays one screen or two and every page it leads to is there: each relative
link of README.md, docs/*.md, experiments/README.md and benchmarks/README.md names an
existing file and, with ``#anchor``, a heading of that file (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: The README's length limit, in lines (issue #20: "a README of one screen or two").
README_MAX_LINES = 250
#: A Markdown link or image: [text](target) or [text](target "title").
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def pages() -> list[Path]:
    found = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    found += [REPO_ROOT / name for name in ("experiments/README.md", "benchmarks/README.md")]
    return [page for page in found if page.exists()]


def prose(markdown: str) -> list[str]:
    """The lines of ``markdown`` outside fenced code blocks."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than ``-`` and ``_``
    dropped (backticks included), each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of ``path``; a repeated heading gets ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # code spans hold no links
        links += [
            target
            for target in LINK.findall(line)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # https:, mailto:, ...
        ]
    return links


def test_the_readme_is_at_most_250_lines() -> None:
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        resolved = (page.parent / target).resolve() if target else page
        if not (resolved.is_relative_to(REPO_ROOT) and resolved.exists()):
            broken.append(f"{link}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{link}: no heading with that anchor in {resolved.name}")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: {broken}"


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    readme = REPO_ROOT / "README.md"
    linked = {(readme.parent / link.partition("#")[0]).resolve() for link in relative_links(readme)}
    unlinked = [
        str(page.relative_to(REPO_ROOT))
        for page in sorted((REPO_ROOT / "docs").glob("*.md"))
        if page.resolve() not in linked
    ]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_anchor_rules_match_githubs() -> None:
    assert slug("1. The coursework's preprocessed copy") == "1-the-courseworks-preprocessed-copy"
    assert slug("The built-in data (`data=synthetic`, the default)") == (
        "the-built-in-data-datasynthetic-the-default"
    )
    assert slug("GPU check: `gpu_check.sh`") == "gpu-check-gpu_checksh"
    assert slug("`tagger bench ... augment=standard`: the cost of augmentation") == (
        "tagger-bench--augmentstandard-the-cost-of-augmentation"
    )


def test_a_broken_link_or_anchor_would_be_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Same\n\n## Same\n\n[a](#same-1) [b](other.md) `[c](no.md)`\n")
    assert anchors(page) == {"title", "same", "same-1"}
    assert relative_links(page) == ["#same-1", "other.md"]
