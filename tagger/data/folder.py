"""Any folder of tagged audio -> a store plan (``tagger prepare folder``).

The labels CSV has a header and one row per file: ``path`` (relative to the root),
``tags`` (names separated by ``;``, may be empty) and optionally ``split``
(``train``, ``val`` or ``test``; without the column the split is drawn from a seed).
Tag columns are the tags' names in alphabetical order. Every listed file must lie under
the root (an absolute path, ``..`` or a symlink leading out is refused) and be listed once.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tagger.data.splits import SPLIT_NAMES, seeded_split
from tagger.data.store import DEFAULT_MIN_SECONDS, StoreClip, StorePlan
from tagger.errors import ConfigError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def read_labels(labels: Path) -> list[dict[str, str]]:
    """The rows of a labels CSV, checked: ``path`` and ``tags`` columns, at least one row."""
    if not labels.is_file():
        raise ConfigError(f"--labels {labels}: no such file (expected a CSV of path,tags)")
    try:
        with open(labels, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"--labels {labels}: not a UTF-8 CSV file ({error})") from None
    if not columns:
        raise ConfigError(
            f"--labels {labels}: the file is empty; expected a header `path,tags[,split]` and "
            "one row per audio file"
        )
    missing = [name for name in ("path", "tags") if name not in columns]
    if missing:
        raise ConfigError(
            f"--labels {labels}: no {' or '.join(missing)} column; expected a header "
            f"`path,tags[,split]`, found {','.join(columns)}"
        )
    if not rows:
        raise ConfigError(f"--labels {labels}: a header but no rows; expected one row per file")
    return rows


def check_paths(root: Path, labels: Path, rows: list[dict[str, str]]) -> None:
    """Refuse rows whose path is absolute or resolves outside ``root`` (through ``..`` or a
    symlink), and files listed twice: one ``ConfigError`` with a line per offending row."""
    inside = root.resolve()
    problems, first_line = [], {}
    for line, row in enumerate(rows, start=2):
        where, path = f"--labels {labels} line {line}", row["path"]
        target = (root / path).resolve()
        if Path(path).is_absolute():
            problems.append(f"{where}: path {path!r} is absolute; give it relative to --root")
        elif not target.is_relative_to(inside):
            problems.append(
                f"{where}: path {path!r} leads outside --root {root} (to {target}); list only "
                "files under the root"
            )
        elif target in first_line:
            problems.append(
                f"--labels {labels} lines {first_line[target]} and {line}: both list "
                f"{target.relative_to(inside)}; list each file once"
            )
        else:
            first_line[target] = line
    if problems:
        raise ConfigError("\n".join(problems))


def track_limits(
    sample_rate: int, max_seconds: float | None, min_seconds: float | None
) -> tuple[int | None, int | None]:
    """``--max-seconds`` and ``--min-seconds`` of a store of whole tracks, checked, in samples
    (None where not given)."""
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"--max-seconds {max_seconds} must be positive")
    if min_seconds is not None and min_seconds < 0:
        raise ConfigError(f"--min-seconds {min_seconds} must be 0 or more")
    min_samples = None if min_seconds is None else round(min_seconds * sample_rate)
    max_samples = None if max_seconds is None else round(max_seconds * sample_rate)
    shortest = round(DEFAULT_MIN_SECONDS * sample_rate) if min_samples is None else min_samples
    if max_samples is not None and max_samples < shortest:
        raise ConfigError(
            f"--max-seconds {max_seconds} is shorter than --min-seconds "
            f"{DEFAULT_MIN_SECONDS if min_seconds is None else min_seconds}; lower --min-seconds"
        )
    return max_samples, min_samples


def folder_plan(
    root: Path,
    labels: Path,
    sample_rate: int,
    clip_seconds: float | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    max_seconds: float | None = None,
    min_seconds: float | None = None,
) -> StorePlan:
    """The files listed in ``labels`` under ``root``, cropped or padded to ``clip_seconds``;
    or with ``clip_seconds`` None, each kept whole as a track of its own length (a version 2
    store: its middle ``max_seconds`` when longer, zero-padded to ``min_seconds``, default
    ``DEFAULT_MIN_SECONDS``, when shorter)."""
    if not root.is_dir():
        raise ConfigError(f"--root {root}: no such directory (expected a folder of audio files)")
    if (clip_seconds is not None and clip_seconds <= 0) or sample_rate <= 0:
        raise ConfigError("--clip-seconds and --sample-rate must be positive")
    if clip_seconds is not None and (max_seconds is not None or min_seconds is not None):
        raise ConfigError(
            "--max-seconds and --min-seconds are for whole tracks; add --clip-seconds none"
        )
    max_samples, min_samples = track_limits(sample_rate, max_seconds, min_seconds)
    rows = read_labels(labels)
    for line, row in enumerate(rows, start=2):
        if not row["path"] or not row["path"].lower().endswith(AUDIO_SUFFIXES):
            raise ConfigError(
                f"--labels {labels} line {line}: path {row['path']!r} is not a "
                f"{'/'.join(AUDIO_SUFFIXES)} file"
            )
        if "split" in row and row["split"] not in SPLIT_NAMES:
            raise ConfigError(
                f"--labels {labels} line {line}: split {row['split']!r} is not train, val or test"
            )
    check_paths(root, labels, rows)
    tag_lists = [[tag.strip() for tag in row["tags"].split(";") if tag.strip()] for row in rows]
    tag_names = sorted({tag for tags in tag_lists for tag in tags})
    if not tag_names:
        raise ConfigError(f"--labels {labels}: no row has a tag; nothing to learn")
    column = {tag: i for i, tag in enumerate(tag_names)}
    if "split" in rows[0]:
        splits, split_rule = [row["split"] for row in rows], "split column of the labels CSV"
    else:
        splits = seeded_split(len(rows), val_fraction, test_fraction, seed)
        split_rule = f"seeded: val {val_fraction}, test {test_fraction}, seed {seed}"
    clips = []
    for row, tags, split in zip(rows, tag_lists, splits, strict=True):
        vector = np.zeros(len(tag_names), np.uint8)
        vector[[column[tag] for tag in tags]] = 1
        clips.append(StoreClip(row["path"], root / row["path"], row["path"], split, vector))
    meta = {
        "source": "folder",
        "root": str(root.resolve()),
        "labels_file": str(labels.resolve()),
        "tag_set": "tags of the labels CSV, alphabetical",
        "split_rule": split_rule,
        "dropped": {},
    }
    if clip_seconds is None:
        return StorePlan(
            clips, tag_names, sample_rate, None, meta,
            max_samples=max_samples, min_samples=min_samples,
        )  # fmt: skip
    return StorePlan(clips, tag_names, sample_rate, round(clip_seconds * sample_rate), meta)
