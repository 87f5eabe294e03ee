"""The clip store: one directory per prepared dataset, read by positioned reads.

Layout (format version 1)::

    STORE/
      meta.json    sample rate, clip length, source, tag set, split rule, counts per
                   split, dropped and skipped files (with reasons), format version
      audio.bin    int16 [clips, clip_samples], little-endian, C order, int16 scale
                   (np.memmap(STORE/audio.bin, "<i2", "r", shape=(clips, clip_samples)))
      labels.npy   uint8 [clips, tags], 0/1, columns in meta["tag_names"] order
      clips.csv    clip_id,path,split: row i describes audio row i (path = source file)

``StoreWriter`` builds ``STORE.partial/`` by appending clips and renames it to ``STORE``
only when complete, so a directory named ``STORE`` is always a finished store. An
interrupted writer resumes from its last committed batch of clips.
"""

from __future__ import annotations

import csv
import hashlib
import json
import mmap
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagger.data.sources import runs
from tagger.errors import ConfigError

FORMAT_VERSION = 1
AUDIO_FILE, LABELS_FILE, CLIPS_FILE, META_FILE = "audio.bin", "labels.npy", "clips.csv", "meta.json"
AUDIO_DTYPE = np.dtype("<i2")
_PLAN_FILE, _DONE_FILE = "plan.json", "done.jsonl"


@dataclass
class StoreClip:
    """One source file to become a store clip.

    Attributes:
        clip_id: identifier kept in ``clips.csv`` (MTAT's clip_id, or the file's path).
        path: the audio file to decode.
        source_path: ``path`` as recorded in the store (relative to the source root).
        split: ``train``, ``val`` or ``test``.
        labels: uint8 [tags], 0/1.
    """

    clip_id: str
    path: Path
    source_path: str
    split: str
    labels: np.ndarray


@dataclass
class StorePlan:
    """Everything a store is built from: the clips to decode, in store order, and their format.

    Attributes:
        clips: the source files, in the order their audio rows will have.
        tag_names: label columns.
        sample_rate: Hz of the stored audio.
        clip_samples: samples per stored clip (every clip is cropped or padded to it).
        meta: source-specific facts for ``meta.json`` (source, root, tag set, split rule,
            clips dropped before decoding and why).
    """

    clips: list[StoreClip]
    tag_names: list[str]
    sample_rate: int
    clip_samples: int
    meta: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A hash of what the store will hold; a resumed prepare must have the same one."""
        digest = hashlib.sha256()
        head = [self.tag_names, self.sample_rate, self.clip_samples, FORMAT_VERSION]
        digest.update(json.dumps(head).encode())
        for clip in self.clips:
            digest.update(f"{clip.clip_id}\0{clip.source_path}\0{clip.split}\0".encode())
            digest.update(np.asarray(clip.labels, np.uint8).tobytes())
        return digest.hexdigest()


def partial_dir(out: Path) -> Path:
    """Where an unfinished store at ``out`` is built."""
    return out.with_name(out.name + ".partial")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreWriter:
    """Appends decoded clips to ``OUT.partial/`` in plan order; ``finish`` renames it to ``OUT``.

    ``add`` buffers a clip (or the reason it was skipped); ``commit`` makes everything
    added so far durable. Killed at any point, a writer started again with the same plan
    continues after the last commit.
    """

    def __init__(self, out: Path, plan: StorePlan) -> None:
        if (out / META_FILE).is_file():
            raise ConfigError(
                f"{out} is already a finished clip store; delete it or choose another --out"
            )
        if out.exists():
            raise ConfigError(f"{out} exists and is not a clip store; choose another --out")
        self.out = out
        self.plan = plan
        self.partial = partial_dir(out)
        self.row_bytes = plan.clip_samples * AUDIO_DTYPE.itemsize
        self.entries: list[tuple[int, str | None]] = []  # (plan index, skip reason or None)
        if self.partial.exists():
            self._resume()
        else:
            self.partial.mkdir(parents=True)
            state = {"fingerprint": plan.fingerprint(), "clips": len(plan.clips)}
            (self.partial / _PLAN_FILE).write_text(json.dumps(state))
            (self.partial / AUDIO_FILE).touch()
            (self.partial / _DONE_FILE).touch()
        self._audio = open(self.partial / AUDIO_FILE, "ab")  # noqa: SIM115 (closed in finish)
        self._done = open(self.partial / _DONE_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._pending: list[tuple[int, str | None]] = []

    @property
    def next_index(self) -> int:
        """The plan index of the first clip not yet committed."""
        return len(self.entries)

    def _resume(self) -> None:
        plan_file = self.partial / _PLAN_FILE
        state = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
        if state.get("fingerprint") != self.plan.fingerprint():
            raise ConfigError(
                f"{self.partial} holds an unfinished prepare with other settings or sources; "
                "rerun it with the same arguments, or delete that directory to start afresh"
            )
        done_file = self.partial / _DONE_FILE
        text = done_file.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line cut by a kill is not committed
        for line in complete.splitlines():
            entry = json.loads(line)
            self.entries.append((entry["i"], entry["skipped"]))
        kept = sum(reason is None for _, reason in self.entries)
        audio_file = self.partial / AUDIO_FILE
        if audio_file.stat().st_size < kept * self.row_bytes:
            raise ConfigError(f"{audio_file} is shorter than its log says; delete {self.partial}")
        with open(done_file, "r+b") as f:
            f.truncate(len(complete.encode("utf-8")))
        with open(audio_file, "r+b") as f:
            f.truncate(kept * self.row_bytes)  # drop clips written after the last commit

    def add(self, index: int, clip: np.ndarray | None, skipped: str | None = None) -> None:
        """Append plan clip ``index``: int16 [clip_samples], or None with the reason it failed."""
        if index != self.next_index + len(self._pending):
            raise ValueError(f"clips must be added in plan order; got {index}")
        if clip is not None:
            if clip.shape != (self.plan.clip_samples,):
                raise ValueError(f"clip {index} has shape {clip.shape}")
            self._audio.write(np.ascontiguousarray(clip, AUDIO_DTYPE).tobytes())
        self._pending.append((index, None if clip is not None else skipped or "skipped"))

    def commit(self) -> None:
        """Make every added clip durable: audio first, then the log that counts it."""
        self._audio.flush()
        os.fsync(self._audio.fileno())
        for index, reason in self._pending:
            self._done.write(json.dumps({"i": index, "skipped": reason}) + "\n")
        self._done.flush()
        os.fsync(self._done.fileno())
        self.entries.extend(self._pending)
        self._pending = []

    def finish(self) -> Path:
        """Write labels, clip list and meta.json, then rename the directory to ``out``."""
        self.commit()
        self._audio.close()
        self._done.close()
        plan = self.plan
        if self.next_index != len(plan.clips):
            raise ValueError(f"{self.next_index} of {len(plan.clips)} clips written")
        kept = [plan.clips[i] for i, reason in self.entries if reason is None]
        skipped = [
            {"path": plan.clips[i].source_path, "clip_id": plan.clips[i].clip_id, "reason": reason}
            for i, reason in self.entries
            if reason is not None
        ]
        labels = np.zeros((len(kept), len(plan.tag_names)), np.uint8)
        for row, clip in enumerate(kept):
            labels[row] = clip.labels
        np.save(self.partial / LABELS_FILE, labels)
        with open(self.partial / CLIPS_FILE, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "path", "split"])
            writer.writerows([clip.clip_id, clip.source_path, clip.split] for clip in kept)
        counts = Counter(clip.split for clip in kept)
        meta = {
            "format_version": FORMAT_VERSION,
            **plan.meta,
            "sample_rate": plan.sample_rate,
            "clip_samples": plan.clip_samples,
            "clip_seconds": plan.clip_samples / plan.sample_rate,
            "dtype": "int16",
            "clips": len(kept),
            "counts": {split: counts.get(split, 0) for split in ("train", "val", "test")},
            "tag_names": plan.tag_names,
            "skipped": skipped,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (self.partial / _PLAN_FILE).unlink()
        (self.partial / _DONE_FILE).unlink()
        for name in (AUDIO_FILE, LABELS_FILE, CLIPS_FILE, META_FILE):
            _fsync(self.partial / name)
        os.replace(self.partial, self.out)
        _fsync(self.out.parent)
        return self.out


def discard_partial(out: Path) -> None:
    """Delete an unfinished store at ``out`` (``tagger prepare --restart``)."""
    shutil.rmtree(partial_dir(out), ignore_errors=True)


class StoreAudio:
    """Clips ``rows`` of a store's audio file as a ``ClipSource`` (a split is its rows).

    Windows are copied from the file straight into the batch array by positioned reads
    (``os.preadv``): nothing of the file stays counted in the process's memory however
    many clips are read (the OS page cache keeps them for the next epoch), and loader
    processes share no file offset. Where the OS has no ``preadv``, they are copied out
    of a read-only memory map whose pages are released after each batch.

    Args:
        path: the store's ``audio.bin``.
        rows: the file's rows that are clips 0, 1, ... of this source: int64 [clips].
        clip_samples: samples per row.
    """

    dtype = AUDIO_DTYPE

    def __init__(self, path: Path, rows: np.ndarray, clip_samples: int) -> None:
        self.path = path
        self.rows = np.asarray(rows, np.int64)
        self.shape = (len(self.rows), clip_samples)
        self._fd: int | None = None
        self._map: mmap.mmap | None = None

    def subset(self, clips: np.ndarray) -> StoreAudio:
        """Clips ``clips`` of this source as a source of their own."""
        return StoreAudio(self.path, self.rows[clips], self.shape[1])

    def read(self, indices: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """See ``ClipSource.read``: int16 [B, W, 1, length]."""
        out = np.empty((len(indices), np.shape(starts)[1], 1, length), AUDIO_DTYPE)
        copies = runs(self.rows[indices], starts, out)
        if not hasattr(os, "preadv"):
            self._copy_from_map(copies)
            return out
        if self._fd is None:  # opened lazily, so each loader process opens the file itself
            self._fd = os.open(self.path, os.O_RDONLY)
        for row, start, part in copies:
            offset = (row * self.shape[1] + start) * AUDIO_DTYPE.itemsize
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
        for row, start, part in copies:
            offset = (row * self.shape[1] + start) * AUDIO_DTYPE.itemsize
            part[:] = np.frombuffer(self._map, AUDIO_DTYPE, part.size, offset)
        if hasattr(mmap, "MADV_DONTNEED"):  # the whole map: the kernel maps pages around a
            self._map.madvise(mmap.MADV_DONTNEED)  # fault too, outside the clips' ranges

    def __getitem__(self, index: int) -> np.ndarray:
        """All samples of clip ``index``: int16 [clip_samples]."""
        return self.read(np.array([index]), np.zeros((1, 1), np.int64), self.shape[1]).ravel()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_map": None}

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class ClipStore:
    """A finished clip store, opened for reading (checks every file against meta.json)."""

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
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"{meta_file}: format version {self.meta.get('format_version')}, but this "
                f"tagger reads version {FORMAT_VERSION}; prepare the store again"
            )
        self.sample_rate: int = self.meta["sample_rate"]
        self.clip_samples: int = self.meta["clip_samples"]
        self.tag_names: list[str] = list(self.meta["tag_names"])
        n_clips = self.meta["clips"]

        with open(self.path / CLIPS_FILE, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        self.clip_ids = [row["clip_id"] for row in rows]
        self.source_paths = [row["path"] for row in rows]
        self.splits = np.array([row["split"] for row in rows])
        self.labels: np.ndarray = np.load(self.path / LABELS_FILE)
        audio_file = self.path / AUDIO_FILE
        expected = n_clips * self.clip_samples * AUDIO_DTYPE.itemsize
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
                raise ConfigError(
                    f"{self.path}: {problem}, but meta.json says {n_clips} clips of "
                    f"{self.clip_samples} samples and {len(self.tag_names)} tags; "
                    "the store is damaged, prepare it again"
                )
        self.audio = StoreAudio(audio_file, np.arange(n_clips), self.clip_samples)

    def memmap(self) -> np.memmap:
        """All audio as a read-only int16 memmap [clips, clip_samples] (for analysis)."""
        return np.memmap(self.path / AUDIO_FILE, AUDIO_DTYPE, "r", shape=self.audio.shape)


def store_info(path: str | None, key: str) -> Any:
    """``meta.json[key]`` of the store at ``path``, or None when there is no store there
    (the data module then reports the problem properly)."""
    meta_file = Path(path).expanduser() / META_FILE if path else None
    if meta_file is None or not meta_file.is_file():
        return None
    return json.loads(meta_file.read_text()).get(key)
