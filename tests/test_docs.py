"""The docs stand alone: docs/results.md holds every figure of tagger/published.py with its
setting, docs/mtat.md the tag lists of tagger/data/tagsets.py, and no file of the project
points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import tagger.published
from tagger.data.tagsets import MERGED50, MTAT_COLUMNS, SYNONYMS, TOP50
from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
#: The split and tag set each family of published figures must name in its section.
SETTINGS = {
    "DIELEMAN_": ("`dieleman`", "`top50`", "16 kHz"),
    "REPLICATION_": ("`coursework`", "`merged50`", "12 kHz"),
    "SAMPLE_LEVEL": ("`clean`", "`top50`", "16 kHz"),
}
#: Folders that are not the project's files.
NOT_PROJECT = {".git", ".venv", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache"}


def published_tables() -> dict[str, dict]:
    """The figure tables of tagger/published.py: its upper-case dicts of numbers (or tuples
    of numbers); ``NETWORKS``, which maps class paths to names, holds no figure."""

    def is_figure(value: object) -> bool:
        return isinstance(value, float) or (
            isinstance(value, tuple) and all(isinstance(v, float) for v in value)
        )

    return {
        name: value
        for name, value in vars(tagger.published).items()
        if name.isupper() and isinstance(value, dict) and all(map(is_figure, value.values()))
    }


def section(markdown: str, name: str) -> str:
    """The text under the heading that names ``name`` in backticks, to the next heading."""
    match = re.search(rf"^#+ [^\n]*`{name}`[^\n]*\n(.*?)(?=^#+ |\Z)", markdown, re.M | re.S)
    assert match, f"docs/results.md has no section headed with `{name}`"
    return match.group(1)


def rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, without backticks."""
    return [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def test_results_md_holds_every_published_figure_in_its_setting() -> None:
    markdown = (DOCS / "results.md").read_text()
    tables = published_tables()
    assert len(tables) >= 5
    for name, table in tables.items():
        text = section(markdown, name)
        assert "Setting:" in text, f"the {name} section states no setting"
        for prefix, words in SETTINGS.items():
            if name.startswith(prefix):
                assert all(word in text for word in words), (name, words)
        cells = rows(text)
        for key, value in table.items():
            keys = [str(part) for part in (key if isinstance(key, tuple) else (key,))]
            figures = [f"{v:.4f}" for v in (value if isinstance(value, tuple) else (value,))]
            matching = [
                row
                for row in cells
                if all(k in row for k in keys)
                and [cell for cell in row if cell in figures] == figures  # in this order
            ]
            assert matching, f"docs/results.md, {name}: no row with {keys} and {figures}"


def test_a_changed_figure_would_be_caught() -> None:
    markdown = (DOCS / "results.md").read_text().replace("| 0.8487 |", "| 0.8488 |")
    cells = rows(section(markdown, "DIELEMAN_TABLE1"))
    assert not [row for row in cells if row[:2] == ["256", "256"] and "0.8487" in row]


def _quoted_list(markdown: str, first: str) -> list[str]:
    """The comma-separated list in the '>' block quote that starts with ``first``."""
    lines = ["", *markdown.splitlines()]
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(f"> {first},") and not lines[i - 1].startswith(">")
    )
    block = []
    for line in lines[start:]:
        if not line.startswith(">"):
            break
        block.append(line.removeprefix(">").strip())
    return [tag.strip() for tag in " ".join(block).split(",")]


def test_mtat_md_lists_the_columns_and_tag_sets_tagger_uses() -> None:
    markdown = (DOCS / "mtat.md").read_text()
    assert _quoted_list(markdown, MTAT_COLUMNS[0]) == list(MTAT_COLUMNS)
    assert _quoted_list(markdown, TOP50[0]) == list(TOP50)
    assert _quoted_list(markdown, MERGED50[0]) == list(MERGED50)
    synonyms = {row[0]: row[1] for row in rows(markdown) if len(row) == 2}
    for group in SYNONYMS:
        assert synonyms.get(group[0]) == ", ".join(group[1:]), group
    for layout in ("test_labels.pkl", "train/c/", "16,963", "4,392"):
        assert layout in markdown


def project_files() -> list[Path]:
    """The project's files: what git tracks or would track (build outputs such as
    ``*.egg-info`` are ignored), or every file outside ``NOT_PROJECT`` without git."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if listed.returncode == 0:
        return [REPO_ROOT / name for name in listed.stdout.splitlines()]
    return [
        path
        for path in REPO_ROOT.rglob("*")
        if not set(path.relative_to(REPO_ROOT).parts) & NOT_PROJECT
        and not any(part.endswith(".egg-info") for part in path.relative_to(REPO_ROOT).parts)
    ]


def project_text_files() -> list[Path]:
    files = []
    for path in project_files():
        if path.is_file():
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


def test_no_file_points_outside_the_repository() -> None:
    patterns = [re.compile(r"\.\./shared\b")]
    if len(REPO_ROOT.parent.parts) > 2:  # this checkout's own location, e.g. /home/me/src/
        patterns.append(re.compile(re.escape(f"{REPO_ROOT.parent}/")))
    found = [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0)}"
        for path in project_text_files()
        for pattern in patterns
        if (match := pattern.search(path.read_text(encoding="utf-8")))
    ]
    assert not found


@pytest.mark.parametrize(
    "page", ["README.md", "docs/mtat.md", "docs/results.md", "experiments/README.md"]
)
def test_relative_links_resolve_inside_the_repository(page: str) -> None:
    path = REPO_ROOT / page
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(REPO_ROOT) and resolved.exists(), f"{page}: {target}"
