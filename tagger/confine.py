"""The one gate for paths read from a data file: confined to their root, each file once.

Every data source that reads file names from a data file (the folder source's labels CSV,
MTAT's ``annotations_final.csv`` and ``clean:`` split files, MTG-Jamendo's split files,
the coursework's labels pickles) turns each name into a path here, and nowhere else.
``confined`` resolves the name under its root, following ``..`` and every symlink, and
refuses an absolute name, one that is not a valid file name, one that names the root
itself, and one whose resolved path lies outside the resolved root; a symlink that stays
inside the root is followed. ``confine_all`` does so for every row of a file and also
refuses two rows naming one file (judged on the resolved path, and on the file's identity
for hard links), so no clip can be in two splits under two spellings. The paths returned
are the resolved ones, so what is decoded later is exactly what was checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePath

from tagger.errors import ConfigError

#: Problems named in full in one error; the rest are counted.
NAMED_PROBLEMS = 10
_LINE = re.compile(r"^(?P<file>.*) (?P<unit>line|row|entry) (?P<number>\d+)$")


def confined(
    root: Path, relative: str, where: str, field: str = "path", root_name: str = "the root"
) -> Path:
    """``root / relative`` with ``..`` and symlinks resolved, checked to lie inside ``root``.

    Args:
        root: the folder the data file's paths are relative to (an existing directory).
        relative: the path as the data file gives it.
        where: the data file and row, e.g. ``"--labels x.csv line 3"``.
        field: what the row calls the path (``path``, ``mp3_path``, ``PATH``).
        root_name: how the user names the root (``--root``, ``--audio``).

    Raises:
        ConfigError: one line naming ``where``, the path and the root, when the path is
            absolute, not a valid file name, the root itself, or leads outside the root.
    """
    return _confined(root, root.resolve(), relative, where, field, root_name)


def _confined(
    root: Path, inside: Path, relative: str, where: str, field: str, root_name: str
) -> Path:
    what = f"{where}: {field} {relative!r}"
    if PurePath(relative).is_absolute():
        raise ConfigError(f"{what} is absolute; give it relative to {root_name}")
    try:
        target = (inside / relative).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # NUL byte, symlink loop, too long
        raise ConfigError(f"{what} is not a usable file name ({error})") from None
    if target == inside:
        raise ConfigError(f"{what} names {root_name} {root} itself, not a file under it")
    if not target.is_relative_to(inside):
        raise ConfigError(
            f"{what} leads outside {root_name} {root} (to {target}); list only files under the root"
        )
    return target


def _both(first: str, second: str) -> str:
    """``"f line 3"`` and ``"f line 9"`` -> ``"f lines 3 and 9"``; else ``"A and B"``."""
    one, two = _LINE.match(first), _LINE.match(second)
    if one and two and one["file"] == two["file"] and one["unit"] == two["unit"]:
        return f"{one['file']} {one['unit']}s {one['number']} and {two['number']}"
    return f"{first} and {second}"


def _identity(target: Path) -> tuple[int, int] | None:
    """The file's (device, inode), or None where it does not exist (it is reported when
    decoded)."""
    try:
        status = os.stat(target)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def confine_all(
    root: Path,
    rows: Iterable[tuple[str, str]],
    field: str = "path",
    root_name: str = "the root",
) -> list[Path]:
    """Every ``(relative path, where)`` of ``rows`` ``confined`` to ``root``, and no file
    named by two rows: the resolved paths, in order.

    Raises one ``ConfigError``, a line per problem (the first ``NAMED_PROBLEMS``, then how
    many more), naming the row of each path that is refused and both rows of a file that
    is listed twice (two spellings, a symlink and its target, or hard links).
    """
    inside = root.resolve()
    problems: list[str] = []
    targets: list[Path] = []
    first_row: dict[object, str] = {}
    for relative, where in rows:
        try:
            target = _confined(root, inside, relative, where, field, root_name)
        except ConfigError as error:
            problems.append(str(error))
            continue
        targets.append(target)
        keys = [target, _identity(target)]
        seen = next((first_row[key] for key in keys if key is not None and key in first_row), None)
        if seen is not None:
            problems.append(
                f"{_both(seen, where)}: both list {target.relative_to(inside)}; list each file once"
            )
            continue
        for key in keys:
            if key is not None:
                first_row[key] = where
    if problems:
        more = len(problems) - NAMED_PROBLEMS
        named = problems[:NAMED_PROBLEMS] + (
            [f"... and {more} more like these"] if more > 0 else []
        )
        raise ConfigError("\n".join(named))
    return targets
