"""Any folder of tagged audio -> a store plan (``tagger prepare folder``).

The labels CSV has a header and one row per file: ``path`` (relative to the root),
``tags`` (names separated by ``;``, may be empty) and optionally ``split``
(``train``, ``val`` or ``test``; without the column the split is drawn from a seed).
Every row has as many fields as the header (tags are separated by ``;``, not by commas).
Tag columns are the tags' names in alphabetical order. Every listed file must lie under
the root and be listed once (``tagger.confine``: an absolute path, ``..`` or a symlink
leading out is refused; two spellings of one file are one file).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tagger.confine import confine_all
from tagger.data.splits import SPLIT_NAMES, seeded_split
from tagger.errors import ConfigError
from tagger.prepare.writer import DEFAULT_MIN_SECONDS, StoreClip, StorePlan

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def read_labels(labels: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a labels CSV with their line numbers, checked: ``path`` and ``tags``
    columns, at least one row, and every row with as many fields as the header."""
    if not labels.is_file():
        raise ConfigError(f"--labels {labels}: no such file (expected a CSV of path,tags)")
    try:
        with open(labels, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            columns = next(reader, [])
            lines = [(reader.line_num, fields) for fields in reader if fields]
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
    if not lines:
        raise ConfigError(f"--labels {labels}: a header but no rows; expected one row per file")
    for line, fields in lines:
        if len(fields) != len(columns):
            raise ConfigError(
                f"--labels {labels} line {line}: {len(fields)} field(s) under a header of "
                f"{len(columns)} ({','.join(columns)}); separate tags with `;`, and quote a "
                "field that holds a comma"
            )
    return [(line, dict(zip(columns, fields, strict=True))) for line, fields in lines]


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
    lines = read_labels(labels)
    for line, row in lines:
        if not row["path"] or not row["path"].lower().endswith(AUDIO_SUFFIXES):
            raise ConfigError(
                f"--labels {labels} line {line}: path {row['path']!r} is not a "
                f"{'/'.join(AUDIO_SUFFIXES)} file"
            )
        if "split" in row and row["split"] not in SPLIT_NAMES:
            raise ConfigError(
                f"--labels {labels} line {line}: split {row['split']!r} is not train, val or test"
            )
    rows = [row for _, row in lines]
    targets = confine_all(
        root, [(row["path"], f"--labels {labels} line {line}") for line, row in lines],
        root_name="--root",
    )  # fmt: skip
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
    for row, target, tags, split in zip(rows, targets, tag_lists, splits, strict=True):
        vector = np.zeros(len(tag_names), np.uint8)
        vector[[column[tag] for tag in tags]] = 1
        clips.append(StoreClip(row["path"], target, row["path"], split, vector))
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
