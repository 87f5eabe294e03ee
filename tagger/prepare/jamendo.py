"""MTG-Jamendo -> a store plan (``tagger prepare jamendo``).

The data set is full-length mp3 tracks in folders ``00``-``99`` and, in its repository,
split files ``splits/split-<N>/autotagging[_<subset>]-{train,validation,test}.tsv``:
TAB-separated, the header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``, one track a
line, and from the sixth field on one tag a field (``genre---rock``,
``instrument---piano``, ``mood/theme---relaxing``; a variable number per row). ``PATH``
(``15/215.mp3``) is relative to the audio folder; every one passes ``tagger.confine``: it
must lie under ``--audio`` once resolved (``..`` and symlinks followed), and no two rows of
the three files may name one file (so no audio is in two splits).

Label columns are the tags of the three files, full names (``genre---rock``) in
alphabetical order; the category of each (the part before ``---``) goes into meta.json
as ``tag_categories``. Tracks are stored whole (``clip_samples=None``, a version 2 store),
or their middle ``max_samples`` when longer; shorter ones are zero-padded to
``min_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.confine import confine_all
from tagger.errors import ConfigError
from tagger.metrics import CATEGORY_SEPARATOR, tag_categories
from tagger.prepare.folder import track_limits
from tagger.prepare.writer import StoreClip, StorePlan

#: ``--subset`` -> the stem of its split files (``all``: every tag, ``autotagging``).
SUBSETS = {
    "top50tags": "autotagging_top50tags",
    "genre": "autotagging_genre",
    "instrument": "autotagging_instrument",
    "moodtheme": "autotagging_moodtheme",
    "all": "autotagging",
}
#: The store's split -> the suffix of its split file.
SPLIT_FILES = {"train": "train", "val": "validation", "test": "test"}
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
SPLIT_INDICES = range(5)


@dataclass(frozen=True)
class Track:
    """One row of a split file: the track's id, its audio path (relative to the audio
    folder, as the file gives it), its tags (full names, ``category---tag``) and where the
    row is (``FILE line N``)."""

    track_id: str
    path: str
    tags: tuple[str, ...]
    where: str


def split_file(splits: Path, subset: str, split_index: int, split: str) -> Path:
    """Where ``split`` (``train``, ``val`` or ``test``) of ``subset`` lies under ``splits``."""
    return splits / f"split-{split_index}" / f"{SUBSETS[subset]}-{SPLIT_FILES[split]}.tsv"


def read_split_file(path: Path) -> list[Track]:
    """The tracks of one split file, checked: the header, a path and at least one
    ``category---tag`` per row."""
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such split file; --splits is the folder that holds split-0 ... "
            "split-4 (data/splits in the MTG-Jamendo repository)"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error})") from None
    header = tuple(lines[0].split("\t")) if lines else ()
    if header != HEADER:
        raise ConfigError(
            f"{path}: expected the tab-separated header {' '.join(HEADER)}, found "
            f"{' '.join(header) or 'nothing'}; give the split files as the MTG-Jamendo "
            "repository has them"
        )
    tracks = []
    for line, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.split("\t")
        tags = tuple(tag.strip() for tag in fields[len(HEADER) - 1 :] if tag.strip())
        where = f"{path} line {line}"
        if len(fields) < len(HEADER) - 1 or not fields[3].strip():
            raise ConfigError(
                f"{where}: expected TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION and tags "
                f"separated by TABs, found {len(fields)} field(s)"
            )
        if not tags:
            raise ConfigError(
                f"{where}: track {fields[0]} has no tag; every row needs at least one tag "
                "after DURATION (restore the file from the MTG-Jamendo repository)"
            )
        odd = [tag for tag in tags if CATEGORY_SEPARATOR not in tag.strip(CATEGORY_SEPARATOR)]
        if odd:
            raise ConfigError(
                f"{where}: tag {odd[0]!r} is not of the form category{CATEGORY_SEPARATOR}tag "
                f"(e.g. genre{CATEGORY_SEPARATOR}rock)"
            )
        tracks.append(Track(fields[0].strip(), fields[3].strip(), tags, where))
    if not tracks:
        raise ConfigError(f"{path}: the header has no track rows under it")
    return tracks


def jamendo_plan(
    audio: Path,
    splits: Path,
    sample_rate: int,
    subset: str = "top50tags",
    split_index: int = 0,
    max_seconds: float | None = None,
    min_seconds: float | None = None,
) -> StorePlan:
    """The tracks of ``subset``'s train/validation/test files of ``split-<split_index>``,
    read from ``audio``: whole, or their middle ``max_seconds`` when longer; shorter than
    ``min_seconds``, zero-padded (see ``StorePlan``).

    Args:
        audio: the folder of the track folders ``00``-``99``.
        splits: the folder that holds ``split-0`` ... ``split-4``.
        sample_rate: Hz to store at.
        subset: a key of ``SUBSETS``.
        split_index: which of the five splits, 0-4.
        max_seconds: longest stored track, in seconds (None: whole tracks).
        min_seconds: shortest stored track, in seconds (None: the store's default).
    """
    if subset not in SUBSETS:
        raise ConfigError(f"--subset {subset!r}: expected one of {', '.join(SUBSETS)}")
    if split_index not in SPLIT_INDICES:
        raise ConfigError(f"--split-index {split_index}: expected 0, 1, 2, 3 or 4")
    if not audio.is_dir():
        raise ConfigError(f"--audio {audio}: no such directory (expected the folders 00-99)")
    if not splits.is_dir():
        raise ConfigError(
            f"--splits {splits}: no such directory (expected the folder with split-0 ... split-4)"
        )
    if sample_rate <= 0:
        raise ConfigError(f"--sample-rate {sample_rate} must be positive")
    max_samples, min_samples = track_limits(sample_rate, max_seconds, min_seconds)
    per_split = {
        split: (split_file(splits, subset, split_index, split), [])
        for split in SPLIT_FILES
    }
    first_file: dict[str, Path] = {}
    for path, tracks in per_split.values():
        for track in read_split_file(path):
            if track.track_id in first_file:
                raise ConfigError(
                    f"{path}: track {track.track_id} is also in {first_file[track.track_id]}; "
                    "a track can be in one split only"
                )
            first_file[track.track_id] = path
            tracks.append(track)
    listed = [(split, track) for split, (_, tracks) in per_split.items() for track in tracks]
    targets = confine_all(
        audio, [(track.path, track.where) for _, track in listed], field="PATH", root_name="--audio"
    )
    tag_names = sorted({tag for _, track in listed for tag in track.tags})
    column = {tag: i for i, tag in enumerate(tag_names)}
    clips = []
    for (split, track), target in zip(listed, targets, strict=True):
        vector = np.zeros(len(tag_names), np.uint8)
        vector[[column[tag] for tag in track.tags]] = 1
        clips.append(StoreClip(track.track_id, target, track.path, split, vector))
    meta = {
        "source": "jamendo",
        "root": str(audio.resolve()),
        "splits_dir": str(splits.resolve()),
        "split_files": {split: str(path.resolve()) for split, (path, _) in per_split.items()},
        "subset": subset,
        "tag_set": f"MTG-Jamendo {SUBSETS[subset]}, alphabetical",
        "split_rule": f"split-{split_index}",
        "tag_categories": tag_categories(tag_names),  # every tag has one (read_split_file)
        "dropped": {},
    }
    return StorePlan(
        clips, tag_names, sample_rate, None, meta, max_samples=max_samples, min_samples=min_samples
    )
