"""The coursework's preprocessed MTAT copy, read in place (``data=coursework``).

Layout (``/work/shared/reference/mtat.md`` section 4)::

    ROOT/annotations/train_labels.pkl   parts 0-c: the training clips
    ROOT/annotations/val_labels.pkl     parts d-f: used as the test split, as the coursework did
    ROOT/samples/<file_path>            one .npy per clip: 349,500 samples at 12 kHz,
                                        int16 scale, float32 or int16, flat or [10, 34950]

Each pickle is a pandas DataFrame with columns ``file_path`` (relative to ``samples/``),
``label`` (50 floats: the ``merged50`` tags) and ``part`` (``0``-``f``). Validation clips
are carved out of the training pickle by part (``data.val_parts``) or by a seeded
fraction (``data.val_fraction``); with neither, validation uses the test split, as the
coursework did (then early stopping and checkpoint selection see the test clips).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tagger.data.clips import ClipDataset
from tagger.data.datamodule import ClipDataModule
from tagger.data.sources import runs
from tagger.data.splits import carve_validation
from tagger.data.tagsets import MERGED50
from tagger.errors import BadClipError, ConfigError

#: Samples per coursework clip: 29.125 s at 12 kHz.
CLIP_SAMPLES = 349_500
COLUMNS = ("file_path", "label", "part")
SAMPLE_DTYPES = (np.float32, np.float64, np.int16)


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


def read_labels_pickle(path: Path) -> pd.DataFrame:
    """A coursework labels pickle, checked: its columns and 50 labels per row."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist (expected the coursework's labels pickle)")
    try:
        frame = pd.read_pickle(path)
    except Exception as error:  # any unpickling failure: a foreign or damaged file
        raise ConfigError(f"{path} cannot be unpickled as a pandas DataFrame ({error})") from None
    found = list(frame.columns) if isinstance(frame, pd.DataFrame) else type(frame).__name__
    if not isinstance(frame, pd.DataFrame) or not set(COLUMNS) <= set(frame.columns):
        raise ConfigError(
            f"{path}: expected a pandas DataFrame with columns {', '.join(COLUMNS)}; found {found}"
        )
    for row, (file_path, label) in enumerate(zip(frame["file_path"], frame["label"], strict=True)):
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

    def _dataset(self, frame: pd.DataFrame) -> ClipDataset:
        ids = [str(path) for path in frame["file_path"]]
        paths = [self.root / "samples" / path for path in ids]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise ConfigError(
                f"{len(missing)} sample file(s) listed in the labels pickles do not exist, "
                f"e.g. {missing[0]}; is data.root the folder holding samples/?"
            )
        labels = np.stack([np.asarray(label, np.float32) for label in frame["label"]])
        return ClipDataset(NpyClipFiles(paths, ids), labels, ids, self.n_subclips, self.subclip_len)

    def load_splits(self) -> dict[str, ClipDataset]:
        annotations = self.root / "annotations"
        train = read_labels_pickle(annotations / "train_labels.pkl")
        test = read_labels_pickle(annotations / "val_labels.pkl")
        parts = [str(part) for part in train["part"]]
        is_val = carve_validation(parts, self.val_parts, self.val_fraction, self.split_seed)
        splits = {"train": self._dataset(train[~is_val]), "test": self._dataset(test)}
        splits["val"] = self._dataset(train[is_val]) if is_val.any() else splits["test"]
        return splits

    def validation_rule(self) -> str:
        if self.val_parts:
            return f"part(s) {', '.join(self.val_parts)} of train_labels.pkl"
        if self.val_fraction:
            return f"a fraction {self.val_fraction} of train_labels.pkl (seed {self.split_seed})"
        return "the test split (val_labels.pkl), as in the coursework"

    def describe(self) -> dict[str, Any]:
        return {
            "name": "coursework",
            "real_music": True,
            "description": "the coursework's preprocessed MagnaTagATune copy (merged50 tags)",
            "root": str(self.root.resolve()),
            "tag_set": "merged50",
            "split": "coursework",
            "validation": self.validation_rule(),
            "sample_rate": self.sample_rate,
        }
