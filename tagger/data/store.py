"""The clip store: one directory per prepared dataset, read by positioned reads.

Layout (format version 1: clips of one length; version 2: tracks of any length)::

    STORE/
      meta.json    sample rate, clip length, source, tag set, split rule, counts per
                   split, dropped and skipped files (with reasons), format version
      audio.bin    v1: int16 [clips, clip_samples], little-endian, C order, int16 scale
                   (np.memmap(STORE/audio.bin, "<i2", "r", shape=(clips, clip_samples)));
                   v2: int16, every track's samples back to back
      offsets.npy  v2 only: int64 [tracks + 1]; track i is audio samples offsets[i]:offsets[i+1]
      labels.npy   uint8 [clips, tags], 0/1, columns in meta["tag_names"] order
      clips.csv    clip_id,path,split: row i describes audio row (track) i (path = source file)

A v2 store's meta.json has ``"clip_samples": null``, ``max_samples`` (longer files keep
their middle ``max_samples``; null: whole), ``min_samples`` (0 by default: every track is
stored at its real length; ``prepare --min-seconds`` zero-pads shorter ones to it),
``track_samples`` (min, max, mean, total of the stored lengths) and ``padded`` (how many
tracks were padded, and which, with their decoded lengths). A reader takes each track at
its decoded length, so windows are placed inside the real audio whatever the padding.

This module is the reader and the format: the file names and constants here are what
``tagger.prepare.writer.StoreWriter`` (``tagger prepare``) writes. The writer builds a
store in ``STORE.partial/`` (``partial_dir``) and renames it to ``STORE`` only when
complete, so a directory named ``STORE`` is always a finished store.
"""

from __future__ import annotations

import csv
import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from tagger.data.sources import runs
from tagger.errors import ConfigError

#: v1: clips of one length (``clip_samples``); v2: tracks of their own lengths (``offsets.npy``).
FORMAT_VERSION, TRACKS_FORMAT_VERSION = 1, 2
AUDIO_FILE, LABELS_FILE, CLIPS_FILE, META_FILE = "audio.bin", "labels.npy", "clips.csv", "meta.json"
OFFSETS_FILE = "offsets.npy"
#: ``data=store``'s window (``data.subclip_len``) on a v2 store, where no clip length divides
#: into windows: Dieleman's 3 s crops (48,000 samples at 16 kHz).
DEFAULT_WINDOW_SECONDS = 3.0
AUDIO_DTYPE = np.dtype("<i2")


def partial_dir(out: Path) -> Path:
    """Where an unfinished store at ``out`` is built."""
    return out.with_name(out.name + ".partial")


class StoreAudio:
    """Clips of a store's audio file as a ``ClipSource`` (a split is its own list of them).

    Windows are copied from the file straight into the batch array by positioned reads
    (``os.preadv``): nothing of the file stays counted in the process's memory however
    many clips are read (the OS page cache keeps them for the next epoch), and loader
    processes share no file offset. Where the OS has no ``preadv``, they are copied out
    of a read-only memory map whose pages are released after each batch. The part of a
    window that runs past its track's end is zero-filled.

    Args:
        path: the store's ``audio.bin``.
        rows: the store's rows (clips or tracks) that are clips 0, 1, ... of this source:
            int64 [clips] (named in errors).
        offsets: where those clips start in the file, in samples: int64 [clips].
        lengths: samples of each clip: int64 [clips].
        tracks: whether these are tracks of their own lengths (a v2 store: ``lengths`` is
            then public, see ``track_lengths``), not clips of one length (v1).
    """

    dtype = AUDIO_DTYPE

    def __init__(
        self,
        path: Path,
        rows: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        tracks: bool = False,
    ) -> None:
        self.path = path
        self.rows = np.asarray(rows, np.int64)
        self.offsets = np.asarray(offsets, np.int64)
        self._lengths = np.asarray(lengths, np.int64)
        self.tracks = tracks
        #: samples of each track (v2 only; v1 clips are all ``shape[1]`` long)
        self.lengths = self._lengths if tracks else None
        self.shape = (len(self.offsets), int(self._lengths.max(initial=0)))
        self._fd: int | None = None
        self._map: mmap.mmap | None = None

    @classmethod
    def of_rows(cls, path: Path, rows: np.ndarray, clip_samples: int) -> StoreAudio:
        """Rows ``rows`` of a v1 store's ``audio.bin`` [clips, clip_samples]."""
        rows = np.asarray(rows, np.int64)
        lengths = np.full(len(rows), clip_samples, np.int64)
        return cls(path, rows, rows * clip_samples, lengths)

    def subset(self, clips: np.ndarray) -> StoreAudio:
        """Clips ``clips`` of this source as a source of their own."""
        return StoreAudio(
            self.path, self.rows[clips], self.offsets[clips], self._lengths[clips], self.tracks
        )

    def _copies(
        self, indices: np.ndarray, starts: np.ndarray, out: np.ndarray
    ) -> list[tuple[int, int, np.ndarray]]:
        """(store row, file offset in bytes, the part of ``out`` to read there) for each copy
        of a ``read``; the parts past a track's end are zero-filled here and left out."""
        copies = []
        for clip, start, part in runs(indices, starts, out):
            available = min(part.size, max(int(self._lengths[clip]) - start, 0))
            if available < part.size:
                part[available:] = 0
            if available:
                offset = (int(self.offsets[clip]) + start) * AUDIO_DTYPE.itemsize
                copies.append((int(self.rows[clip]), offset, part[:available]))
        return copies

    def read(self, indices: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """See ``ClipSource.read``: int16 [B, W, 1, length]."""
        out = np.empty((len(indices), np.shape(starts)[1], 1, length), AUDIO_DTYPE)
        copies = self._copies(np.asarray(indices, np.int64), starts, out)
        if not hasattr(os, "preadv"):
            self._copy_from_map(copies)
            return out
        if self._fd is None:  # opened lazily, so each loader process opens the file itself
            self._fd = os.open(self.path, os.O_RDONLY)
        for row, offset, part in copies:
            if os.preadv(self._fd, [part], offset) != part.nbytes:
                raise ConfigError(
                    f"{self.path} ended inside clip row {row}: the store is damaged; "
                    "prepare it again"
                )
        return out

    def _copy_from_map(self, copies: list[tuple[int, int, np.ndarray]]) -> None:
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for _, offset, part in copies:
            part[:] = np.frombuffer(self._map, AUDIO_DTYPE, part.size, offset)
        if hasattr(mmap, "MADV_DONTNEED"):  # the whole map: the kernel maps pages around a
            self._map.madvise(mmap.MADV_DONTNEED)  # fault too, outside the clips' ranges

    def __getitem__(self, index: int) -> np.ndarray:
        """All samples of clip ``index``: int16 [its samples]."""
        length = int(self._lengths[index])
        return self.read(np.array([index]), np.zeros((1, 1), np.int64), length).ravel()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_map": None}

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class ClipStore:
    """A finished clip store, opened for reading (checks every file against meta.json).

    ``version`` is 1 (clips of ``clip_samples``) or 2 (tracks of their own lengths:
    ``clip_samples`` is None and ``track_offsets`` int64 [tracks + 1] says where each is).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        meta_file = self.path / META_FILE
        if not meta_file.is_file():
            hint = (
                f"{partial_dir(self.path)} is an unfinished prepare: run the same "
                "`tagger prepare` command again to finish it"
                if partial_dir(self.path).is_dir()
                else "build one with `tagger prepare mtat|folder ... --out DIR`"
            )
            raise ConfigError(f"data.path={self.path} is not a clip store (no {META_FILE}); {hint}")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        self.version = self.meta.get("format_version")
        if self.version not in (FORMAT_VERSION, TRACKS_FORMAT_VERSION):
            raise ConfigError(
                f"{meta_file}: format version {self.version}, but this tagger reads versions "
                f"{FORMAT_VERSION} and {TRACKS_FORMAT_VERSION}; prepare the store again"
            )
        self.sample_rate: int = self.meta["sample_rate"]
        self.clip_samples: int | None = self.meta["clip_samples"]
        self.tag_names: list[str] = list(self.meta["tag_names"])
        n_clips = self.meta["clips"]

        with open(self.path / CLIPS_FILE, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        self.clip_ids = [row["clip_id"] for row in rows]
        self.source_paths = [row["path"] for row in rows]
        self.splits = np.array([row["split"] for row in rows])
        self.labels: np.ndarray = np.load(self.path / LABELS_FILE)
        audio_file = self.path / AUDIO_FILE
        if self.version == FORMAT_VERSION:
            expected = n_clips * self.clip_samples * AUDIO_DTYPE.itemsize
            what = f"{n_clips} clips of {self.clip_samples} samples"
            self.track_offsets = None
        else:
            self.track_offsets = self._offsets(n_clips)
            expected = int(self.track_offsets[-1]) * AUDIO_DTYPE.itemsize
            what = f"{n_clips} tracks of {int(self.track_offsets[-1])} samples in all"
        checks = [
            (len(rows) == n_clips, f"{CLIPS_FILE} has {len(rows)} rows"),
            (
                self.labels.shape == (n_clips, len(self.tag_names)),
                f"{LABELS_FILE} has shape {self.labels.shape}",
            ),
            (
                audio_file.stat().st_size == expected,
                f"{AUDIO_FILE} has {audio_file.stat().st_size} bytes, not {expected}",
            ),
        ]
        for ok, problem in checks:
            if not ok:
                says = "meta.json says" if self.track_offsets is None else (
                    f"meta.json and {OFFSETS_FILE} say"
                )
                raise ConfigError(
                    f"{self.path}: {problem}, but {says} {what} and {len(self.tag_names)} tags; "
                    "the store is damaged, prepare it again"
                )
        if self.track_offsets is None:
            if self.clip_samples < 1:
                raise ConfigError(f"{meta_file}: clips of {self.clip_samples} samples hold no "
                                  "audio; the store is damaged, prepare it again")  # fmt: skip
            self.audio = StoreAudio.of_rows(audio_file, np.arange(n_clips), self.clip_samples)
        else:
            offsets, rows = self.track_offsets, np.arange(n_clips)
            lengths = self._decoded_lengths(np.diff(offsets))
            self.audio = StoreAudio(audio_file, rows, offsets[:-1], lengths, tracks=True)

    def _decoded_lengths(self, stored: np.ndarray) -> np.ndarray:
        """A v2 store's tracks at their real (decoded) lengths: int64 [tracks], the stored
        lengths less the zero padding ``meta.json`` lists under ``padded`` (in store order),
        so that no window is placed in padding. A track of no samples is refused, naming it."""
        lengths = stored.copy()
        listed = self.meta.get("padded") or {}
        padded = listed.get("tracks") if isinstance(listed, dict) else None
        if not isinstance(listed, dict) or not isinstance(padded, list | None):
            raise ConfigError(f"{self.path / META_FILE}: padded is not {{count, tracks: [...]}}; "
                              "the store is damaged, prepare it again")  # fmt: skip
        padded = padded or []
        position = 0
        for row, (clip_id, path) in enumerate(zip(self.clip_ids, self.source_paths, strict=True)):
            if position == len(padded):
                break
            entry = padded[position]
            if not isinstance(entry, dict) or (entry.get("clip_id"), entry.get("path")) != (
                clip_id, path,
            ):  # fmt: skip
                continue
            decoded = entry.get("decoded_samples")
            if type(decoded) is not int or not 0 <= decoded <= stored[row]:
                raise ConfigError(
                    f"{self.path / META_FILE}: padded track {clip_id} has decoded_samples "
                    f"{decoded!r}, not 0 to its {int(stored[row])} stored samples; the store is "
                    "damaged, prepare it again"
                )
            lengths[row] = decoded
            position += 1
        if position != len(padded):
            raise ConfigError(
                f"{self.path / META_FILE}: {len(padded) - position} of its padded tracks are not "
                f"in {CLIPS_FILE} in store order; the store is damaged, prepare it again"
            )
        empty = np.flatnonzero(lengths == 0)
        if len(empty):
            named = ", ".join(self.clip_ids[row] for row in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise ConfigError(
                f"{self.path}: {len(empty)} track(s) hold no samples ({named}{more}); a track "
                "must hold audio: prepare the store again (tracks of no samples are skipped)"
            )
        return lengths

    def _offsets(self, n_tracks: int) -> np.ndarray:
        """A v2 store's ``offsets.npy``, checked: int64 [tracks + 1] from 0, never falling."""
        offsets_file = self.path / OFFSETS_FILE
        try:
            offsets = np.load(offsets_file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{offsets_file}: unreadable ({error}); the store is damaged, prepare it again"
            ) from None
        if (
            offsets.shape != (n_tracks + 1,)
            or offsets.dtype.kind not in "iu"
            or offsets[0] != 0
            or (np.diff(offsets) < 0).any()
        ):
            raise ConfigError(
                f"{offsets_file}: expected {n_tracks + 1} rising int64 offsets from 0 (meta.json "
                f"says {n_tracks} tracks), found shape {offsets.shape}; the store is damaged, "
                "prepare it again"
            )
        return offsets.astype(np.int64)

    def memmap(self) -> np.memmap:
        """All audio as a read-only int16 memmap (for analysis): [clips, clip_samples] for a
        v1 store, [samples] for a v2 store (track i: ``[track_offsets[i]:track_offsets[i+1]]``)."""
        shape = self.audio.shape if self.track_offsets is None else (int(self.track_offsets[-1]),)
        return np.memmap(self.path / AUDIO_FILE, AUDIO_DTYPE, "r", shape=shape)


def store_info(path: str | None, key: str) -> int | None:
    """``meta.json[key]`` of the store at ``path``, a number of samples or Hz that goes into
    the data config, or None when there is no store there (the data module then reports the
    problem properly). Anything but a positive whole number (a config node, text that
    Hydra would interpolate) is refused: a file never supplies config structure."""
    meta_file = Path(path).expanduser() / META_FILE if path else None
    if meta_file is None or not meta_file.is_file():
        return None
    try:
        value = json.loads(meta_file.read_text()).get(key)
    except (ValueError, AttributeError):
        raise ConfigError(f"{meta_file} is not a store's meta.json (not a JSON object)") from None
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31
    ):
        raise ConfigError(f"{meta_file}: {key} must be a positive whole number, not {value!r}")
    return value
