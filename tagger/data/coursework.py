"""The coursework's preprocessed MTAT copy, read in place (``data=coursework``).

Two layouts of the same copy are in use (docs/mtat.md, "The coursework's copy"); the
layout is read from the files present in ``ROOT/annotations``::

    two pickles    train_labels.pkl  parts 0-c, the training clips
                   val_labels.pkl    parts d-f, used as the test split (as the coursework did)
    three pickles  train_labels.pkl  parts 0-b, the training clips
                   val_labels.pkl    part c (files under samples/train/c/), validation
                   test_labels.pkl   parts d-f, the test split
    both           ROOT/samples/<file_path>: one .npy per clip, 349,500 samples at 12 kHz,
                   int16 scale, float32 or int16, flat or [10, 34950]

Each pickle is a pandas DataFrame with columns ``file_path`` (relative to ``samples/``),
``label`` (50 floats: the ``merged50`` tags) and ``part`` (``0``-``f``). With two pickles,
validation clips are carved out of the training pickle by part (``data.val_parts``) or by
a seeded fraction (``data.val_fraction``); with neither, validation uses the test split,
as the coursework did (then early stopping and checkpoint selection see the test clips).
With three pickles each split is its own pickle and nothing is carved.

Every ``file_path`` passes ``tagger.confine``: it must lie under ``ROOT/samples`` once
resolved (``..`` and symlinks followed) and no two rows of the pickles may name one file.
Every sample file's ``.npy`` header and size are checked at start-up, so a truncated file
or one of another shape or dtype stops the run before training, in one error naming them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tagger.confine import confine_all
from tagger.data.clips import ClipDataset
from tagger.data.datamodule import ClipDataModule
from tagger.data.sources import runs
from tagger.data.splits import carve_validation
from tagger.data.tagsets import MERGED50
from tagger.errors import BadClipError, ConfigError
from tagger.safe_pickle import RefusedGlobal, read_dataframe_pickle

log = logging.getLogger(__name__)

#: Samples per coursework clip: 29.125 s at 12 kHz.
CLIP_SAMPLES = 349_500
COLUMNS = ("file_path", "label", "part")
SAMPLE_DTYPES = (np.float32, np.float64, np.int16)
#: layout -> split -> its labels pickle in ``annotations/`` (``None``: carved from train)
LAYOUTS: dict[str, dict[str, str | None]] = {
    "two pickles": {"train": "train_labels.pkl", "val": None, "test": "val_labels.pkl"},
    "three pickles": {
        "train": "train_labels.pkl",
        "val": "val_labels.pkl",
        "test": "test_labels.pkl",
    },
}
#: bad files named in full in a start-up error; the rest are counted
NAMED_BAD_FILES = 10


class NpyClipFiles:
    """The clips of one ``.npy`` file each, as a ``ClipSource`` of float32 [349500] clips.

    ``read`` loads each file of the batch whole and checks it: a file that is missing,
    unreadable, of another dtype or of another length raises ``BadClipError`` naming the
    clip. Files may hold float32, float64 or int16 samples, flat or [10, 34950].
    """

    dtype = np.dtype(np.float32)

    def __init__(self, paths: list[Path], clip_ids: list[str]) -> None:
        self.paths = paths
        self.clip_ids = clip_ids
        self.shape = (len(paths), CLIP_SAMPLES)

    def load(self, index: int) -> np.ndarray:
        """All samples of clip ``index``, as stored: [349500]."""
        path, clip = self.paths[index], self.clip_ids[index]
        try:
            samples = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise BadClipError(f"clip {clip}: {path} does not exist") from None
        except (ValueError, OSError, EOFError) as error:
            raise BadClipError(f"clip {clip}: {path} is not a readable .npy ({error})") from None
        if samples.dtype.type not in SAMPLE_DTYPES:
            raise BadClipError(
                f"clip {clip}: {path} holds {samples.dtype} samples; expected float32 or int16 "
                "on the int16 scale"
            )
        if samples.size != CLIP_SAMPLES or samples.ndim > 2:
            raise BadClipError(
                f"clip {clip}: {path} holds shape {samples.shape}; expected {CLIP_SAMPLES:,} "
                "samples, flat or as [10, 34950]"
            )
        return samples.reshape(-1)

    def read(self, indices: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """See ``ClipSource.read``: float32 [B, W, 1, length]."""
        out = np.empty((len(indices), np.shape(starts)[1], 1, length), self.dtype)
        loaded: tuple[int, np.ndarray] | None = None  # (clip, its samples): one load per clip
        for clip, start, part in runs(indices, starts, out):
            if loaded is None or loaded[0] != clip:
                loaded = (clip, self.load(clip))
            part[:] = loaded[1][start : start + part.size]
        return out


def npy_header_problem(path: Path) -> str | None:
    """What is wrong with a sample file's ``.npy`` header or size, or None if nothing.

    Reads only the header (``np.lib.format.read_magic`` and ``read_array_header_*``) and
    compares the file's size with what the header promises; the samples are not read.
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            data_start = f.tell()
    except FileNotFoundError:
        return "does not exist"
    except (ValueError, OSError, EOFError) as error:
        return f"is not a readable .npy ({error})"
    if dtype.type not in SAMPLE_DTYPES:
        return f"holds {dtype} samples; expected float32 or int16 on the int16 scale"
    if math.prod(shape) != CLIP_SAMPLES or len(shape) > 2:
        return f"holds shape {shape}; expected {CLIP_SAMPLES:,} samples, flat or as [10, 34950]"
    expected = data_start + CLIP_SAMPLES * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        return f"is truncated: {size:,} bytes, its header promises {expected:,}"
    return None


def check_npy_headers(paths: list[Path], clip_ids: list[str]) -> None:
    """Check every sample file's header and size; raise one ``BadClipError`` naming the bad
    files (the first ``NAMED_BAD_FILES`` of them, and how many there are)."""
    bad = [
        f"clip {clip}: {path} {problem}"
        for path, clip in zip(paths, clip_ids, strict=True)
        if (problem := npy_header_problem(path)) is not None
    ]
    if bad:
        more = f"; and {len(bad) - NAMED_BAD_FILES} more" if len(bad) > NAMED_BAD_FILES else ""
        raise BadClipError(
            f"{len(bad)} of {len(paths):,} sample files cannot be used (replace or remove "
            f"them): {'; '.join(bad[:NAMED_BAD_FILES])}{more}"
        )


def read_labels_pickle(path: Path) -> pd.DataFrame:
    """A coursework labels pickle, checked: its columns, at least one row, and per row a
    ``file_path`` string and 50 labels.

    It is unpickled through ``tagger.safe_pickle``'s allowlist (pickles of older pandas
    versions load too): a pickle that names anything but a DataFrame's parts is refused
    before that is imported, so a labels file never runs code.
    """
    if not path.is_file():
        raise ConfigError(f"{path} does not exist (expected the coursework's labels pickle)")
    try:
        frame = read_dataframe_pickle(path)
    except RefusedGlobal as error:
        raise ConfigError(
            f"{path} names {error} while unpickling, which a labels DataFrame never holds; "
            "tagger unpickles data only, not code (use the course's own label files)"
        ) from None
    except Exception as error:  # any unpickling failure: a foreign or damaged file
        raise ConfigError(f"{path} cannot be unpickled as a pandas DataFrame ({error})") from None
    found = list(frame.columns) if isinstance(frame, pd.DataFrame) else type(frame).__name__
    if not isinstance(frame, pd.DataFrame) or not set(COLUMNS) <= set(frame.columns):
        raise ConfigError(
            f"{path}: expected a pandas DataFrame with columns {', '.join(COLUMNS)}; found {found}"
        )
    if frame.empty:
        raise ConfigError(f"{path}: the DataFrame has no rows; expected one row per clip")
    for row, (file_path, label) in enumerate(zip(frame["file_path"], frame["label"], strict=True)):
        if not isinstance(file_path, str):
            raise ConfigError(
                f"{path} row {row}: file_path is {file_path!r}, not a path relative to samples/"
            )
        if np.shape(label) != (len(MERGED50),):
            raise ConfigError(
                f"{path} row {row} ({file_path}): label has shape {np.shape(label)}; expected "
                f"({len(MERGED50)},), the merged50 tags"
            )
    return frame.reset_index(drop=True)


class CourseworkDataModule(ClipDataModule):
    """The coursework's MTAT copy at ``root`` (see the module docstring).

    Args:
        root: the directory holding ``annotations/`` and ``samples/``.
        val_parts: parts of the training pickle used for validation (e.g. ``["c"]``).
        val_fraction: or a seeded fraction of the training pickle used for validation.
        split_seed: seed of ``val_fraction``.
        **loader_args: see ``ClipDataModule``.
    """

    def __init__(
        self,
        root: str | None = None,
        val_parts: list[str] | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        **loader_args: Any,
    ) -> None:
        super().__init__(**loader_args)
        if not root or not Path(root).expanduser().is_dir():
            raise ConfigError(
                f"data.root={root}: no such directory; set data.root to the coursework's "
                "MagnaTagATune folder (the one holding annotations/ and samples/)"
            )
        self.root = Path(root).expanduser()
        self.val_parts = list(val_parts) if val_parts else None
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    @property
    def tag_names(self) -> list[str]:
        return list(MERGED50)

    def layout(self) -> str:
        """``"two pickles"`` or ``"three pickles"``, from the files in ``annotations/``."""
        annotations = self.root / "annotations"
        found = {
            split for split in ("train", "val", "test")
            if (annotations / f"{split}_labels.pkl").is_file()
        }  # fmt: skip
        if found == {"train", "val", "test"}:
            return "three pickles"
        if found == {"train", "val"}:
            return "two pickles"
        listed = ", ".join(f"{name}_labels.pkl" for name in sorted(found)) or "no labels pickle"
        raise ConfigError(
            f"{annotations} holds {listed}; expected train_labels.pkl and val_labels.pkl "
            "(two-pickle layout) or those and test_labels.pkl (three-pickle layout)"
        )

    def _frames(self, layout: str) -> dict[str, pd.DataFrame]:
        """The labels pickles of ``layout`` as frames, one per split, each row's sample file
        confined to ``samples/`` (column ``sample_file``), no file in two rows."""
        annotations = self.root / "annotations"
        carving = self.val_fraction or self.val_parts not in (None, ["c"])
        if layout == "three pickles" and carving:
            raise ConfigError(
                f"{annotations} holds test_labels.pkl, so validation is val_labels.pkl (part c); "
                "data.val_parts and data.val_fraction are for the two-pickle layout (set "
                "data.val_parts=null data.val_fraction=null)"
            )
        pickles = {split: name for split, name in LAYOUTS[layout].items() if name is not None}
        frames = {split: read_labels_pickle(annotations / name) for split, name in pickles.items()}
        rows = [
            (str(file_path), f"{annotations / pickles[split]} row {row}")
            for split, frame in frames.items()
            for row, file_path in enumerate(frame["file_path"])
        ]
        targets = iter(
            confine_all(
                self.root / "samples",
                rows,
                field="file_path",
                root_name="data.root's samples folder",
            )
        )
        frames = {
            split: frame.assign(sample_file=[next(targets) for _ in range(len(frame))])
            for split, frame in frames.items()
        }
        if layout == "two pickles":
            train = frames["train"]
            parts = [str(part) for part in train["part"]]
            is_val = carve_validation(parts, self.val_parts, self.val_fraction, self.split_seed)
            frames["train"] = train[~is_val]
            if is_val.any():
                frames["val"] = train[is_val]
        return frames

    def _dataset(self, frame: pd.DataFrame) -> ClipDataset:
        ids = [str(path) for path in frame["file_path"]]
        paths = list(frame["sample_file"])
        labels = np.stack([np.asarray(label, np.float32) for label in frame["label"]])
        return ClipDataset(NpyClipFiles(paths, ids), labels, ids, self.n_subclips, self.subclip_len)

    def check_files(self, splits: dict[str, ClipDataset]) -> None:
        """Every sample file's ``.npy`` header and size (``check_npy_headers``)."""
        sources = {id(dataset.source): dataset.source for dataset in splits.values()}
        check_npy_headers(
            [path for source in sources.values() for path in source.paths],
            [clip for source in sources.values() for clip in source.clip_ids],
        )

    def load_splits(self) -> dict[str, ClipDataset]:
        layout = self.layout()
        frames = self._frames(layout)
        paths = [path for frame in frames.values() for path in frame["sample_file"]]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise ConfigError(
                f"{len(missing)} sample file(s) listed in the labels pickles do not exist, "
                f"e.g. {missing[0]}; is data.root the folder holding samples/?"
            )
        splits = {split: self._dataset(frame) for split, frame in frames.items()}
        splits.setdefault("val", splits["test"])
        log.info(
            "coursework at %s: %s layout (%s); train %d, val %d, test %d clips; validation: %s",
            self.root, layout, ", ".join(name for name in LAYOUTS[layout].values() if name),
            len(splits["train"]), len(splits["val"]), len(splits["test"]), self.validation_rule(),
        )  # fmt: skip
        return splits

    def validation_rule(self) -> str:
        if self.layout() == "three pickles":
            return "val_labels.pkl (three-pickle layout)"
        if self.val_parts:
            return f"part(s) {', '.join(self.val_parts)} of train_labels.pkl"
        if self.val_fraction:
            return f"a fraction {self.val_fraction} of train_labels.pkl (seed {self.split_seed})"
        return "the test split (val_labels.pkl), as in the coursework"

    def describe(self) -> dict[str, Any]:
        layout = self.layout()
        described = {
            "name": "coursework",
            "real_music": True,
            "description": "the coursework's preprocessed MagnaTagATune copy (merged50 tags)",
            "root": str(self.root.resolve()),
            "layout": layout,
            "pickles": {split: name for split, name in LAYOUTS[layout].items() if name},
            "tag_set": "merged50",
            "split": "coursework",
            "validation": self.validation_rule(),
            "sample_rate": self.sample_rate,
        }
        if self.splits:
            described["clips"] = {split: len(data) for split, data in self.splits.items()}
        return described
