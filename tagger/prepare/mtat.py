"""The raw MagnaTagATune release -> a store plan (``tagger prepare mtat``).

The release is 16 part folders ``0``-``f`` of mp3 files (16 kHz mono, about 29.1 s)
and ``annotations_final.csv``: tab-separated, every field quoted, columns ``clip_id``,
the 188 tags of ``MTAT_COLUMNS`` ("0"/"1") and ``mp3_path`` (relative to the root).
Every ``mp3_path`` passes ``tagger.confine``: it must lie under the root once resolved
(``..`` and symlinks followed) and no two rows may name one file; the split a rule gives
is judged on the resolved path too (the part is the folder the file really lies in).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tagger.confine import confine_all
from tagger.data.splits import split_rule
from tagger.data.tagsets import MTAT_COLUMNS, tagset
from tagger.errors import ConfigError
from tagger.prepare.writer import StoreClip, StorePlan

ANNOTATIONS = "annotations_final.csv"
HEADER = ("clip_id", *MTAT_COLUMNS, "mp3_path")
#: Stored clip length: 29.125 s, the coursework's 349,500 samples at 12 kHz; at 16 kHz
#: (466,000 samples) it holds the release's longest clips (465,984 samples) whole.
CLIP_SECONDS = 29.125


def read_annotations(root: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """``annotations_final.csv`` -> clip ids, raw tags uint8 [clips, 188], mp3 paths."""
    path = root / ANNOTATIONS
    if not path.is_file():
        raise ConfigError(
            f"--root {root}: no {ANNOTATIONS} there (expected the MTAT release: part folders "
            f"0-f and {ANNOTATIONS})"
        )
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path}: not a UTF-8 tab-separated file ({error})") from None
    if not rows or tuple(rows[0]) != HEADER:
        found = rows[0][:3] if rows else "nothing"
        raise ConfigError(
            f"{path}: expected a tab-separated header of clip_id, the 188 MTAT tag columns and "
            f"mp3_path ({len(HEADER)} columns); found {len(rows[0]) if rows else 0} columns "
            f"starting {found}"
        )
    if len(rows) == 1:
        raise ConfigError(f"{path}: the header has no clip rows under it")
    ids, paths, raw = [], [], np.zeros((len(rows) - 1, len(MTAT_COLUMNS)), np.uint8)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(HEADER) or not set(row[1:-1]) <= {"0", "1"}:
            raise ConfigError(
                f"{path} line {line}: expected {len(HEADER)} fields with 0/1 tags, found "
                f"{len(row)} fields"
            )
        ids.append(row[0])
        raw[line - 2] = np.array(row[1:-1], dtype=np.uint8)
        paths.append(row[-1])
    return ids, raw, paths


def mtat_plan(root: Path, sample_rate: int, tags: str, split: str) -> StorePlan:
    """The clips of the release at ``root``, labelled with tag set ``tags`` and split by rule
    ``split`` (``dieleman``, ``coursework``, ``clean:DIR`` or ``pons:DIR``), dropped where
    the rule says."""
    if not root.is_dir():
        raise ConfigError(f"--root {root}: no such directory (expected the MTAT release)")
    tag_set, rule = tagset(tags), split_rule(split)
    ids, raw, paths = read_annotations(root)
    where = [f"{root / ANNOTATIONS} line {line}" for line in range(2, len(paths) + 2)]
    targets = confine_all(
        root, list(zip(paths, where, strict=True)), field="mp3_path", root_name="--root"
    )
    inside = root.resolve()
    resolved = [target.relative_to(inside).as_posix() for target in targets]
    rule = rule.confined_to(root)
    labels = tag_set.labels(raw)
    clips, dropped = [], {"no_tag_in_set": 0, "in_no_split": 0}
    kind, listed = rule.listed()
    unknown = sorted(set(listed) - set(ids if kind == "clip id" else resolved))
    if unknown:
        raise ConfigError(
            f"--split {split}: {len(unknown)} listed clip(s) are not in {root / ANNOTATIONS}, "
            f"e.g. {kind} {unknown[0]}; use the split files made for this copy of MTAT"
        )
    rows = zip(ids, labels, paths, targets, resolved, strict=True)
    for clip_id, row, mp3_path, target, relative in rows:
        clip_split = rule.split_of(clip_id, relative)
        if clip_split is None:
            dropped["in_no_split"] += 1
        elif rule.drop_untagged and not row.any():
            dropped["no_tag_in_set"] += 1
        else:
            clips.append(StoreClip(clip_id, target, mp3_path, clip_split, row))
    meta = {
        "source": "mtat",
        "root": str(root.resolve()),
        "tag_set": tag_set.name,
        "split_rule": rule.name,
        "dropped": dropped,
    }
    return StorePlan(
        clips, list(tag_set.tags), sample_rate, round(CLIP_SECONDS * sample_rate), meta
    )
