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

``StoreWriter`` builds ``STORE.partial/`` by appending clips and renames it to ``STORE``
only when complete, so a directory named ``STORE`` is always a finished store. An
interrupted writer resumes from its last committed batch of clips. One writer at a time:
each holds an exclusive lock on ``STORE.partial.lock`` (an OS file lock, released when its
process ends however it ends) from start to finish.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from tagger.data.sources import runs
from tagger.errors import ConfigError

#: v1: clips of one length (``clip_samples``); v2: tracks of their own lengths (``offsets.npy``).
FORMAT_VERSION, TRACKS_FORMAT_VERSION = 1, 2
AUDIO_FILE, LABELS_FILE, CLIPS_FILE, META_FILE = "audio.bin", "labels.npy", "clips.csv", "meta.json"
OFFSETS_FILE = "offsets.npy"
#: Tracks of a v2 store shorter than this are zero-padded to it (``prepare --min-seconds``).
#: 0: none is; every track is stored at its real length, since the window it will be read
#: in is only known at training time. The reader then pads a track shorter than a window
#: up to one window (zero-fills the window past its end), and no further.
DEFAULT_MIN_SECONDS = 0.0
#: ``data=store``'s window (``data.subclip_len``) on a v2 store, where no clip length divides
#: into windows: Dieleman's 3 s crops (48,000 samples at 16 kHz).
DEFAULT_WINDOW_SECONDS = 3.0
AUDIO_DTYPE = np.dtype("<i2")
_PLAN_FILE, _DONE_FILE = "plan.json", "done.jsonl"
#: What may happen to a file that decodes shorter than its header says (``prepare --truncated``).
TRUNCATED_POLICIES = ("keep", "skip")


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
        clip_samples: samples per stored clip (every clip is cropped or padded to it: a
            version 1 store), or None to keep every file whole as a track of its own length
            (a version 2 store).
        meta: source-specific facts for ``meta.json`` (source, root, tag set, split rule,
            clips dropped before decoding and why).
        truncated: ``keep`` a file that decodes shorter than its header says (listed under
            ``truncated`` in ``meta.json``) or ``skip`` it (listed under ``skipped``).
        max_samples: v2 only: longer files keep their middle ``max_samples`` (None: whole).
        min_samples: v2 only: shorter tracks are zero-padded to it and listed under
            ``padded`` in ``meta.json`` (None: ``DEFAULT_MIN_SECONDS``, no padding).
    """

    clips: list[StoreClip]
    tag_names: list[str]
    sample_rate: int
    clip_samples: int | None
    meta: dict[str, Any] = field(default_factory=dict)
    truncated: str = "keep"
    max_samples: int | None = None
    min_samples: int | None = None

    def __post_init__(self) -> None:
        if self.clip_samples is not None and self.clip_samples < 1:
            raise ConfigError(f"a clip of {self.clip_samples} samples holds no audio; give a "
                              "positive --clip-seconds, or none to keep each file whole")
        if self.clip_samples is not None and (self.max_samples or self.min_samples):
            raise ValueError("max_samples and min_samples are for tracks (clip_samples=None)")
        if self.max_samples is not None and self.max_samples < self.pad_samples:
            raise ValueError(f"max_samples {self.max_samples} < min_samples {self.pad_samples}")

    @property
    def version(self) -> int:
        """The store format this plan writes: 1 (fixed-length clips) or 2 (tracks)."""
        return FORMAT_VERSION if self.clip_samples is not None else TRACKS_FORMAT_VERSION

    @property
    def pad_samples(self) -> int:
        """v2: the length shorter tracks are zero-padded to (``min_samples`` or its default)."""
        if self.min_samples is not None:
            return self.min_samples
        return round(DEFAULT_MIN_SECONDS * self.sample_rate)

    def fingerprint(self) -> str:
        """A hash of what the store will hold; a resumed prepare must have the same one."""
        digest = hashlib.sha256()
        head = [self.tag_names, self.sample_rate, self.clip_samples, self.version, self.truncated]
        if self.version == TRACKS_FORMAT_VERSION:
            head += [self.max_samples, self.pad_samples]
        digest.update(json.dumps(head).encode())
        for clip in self.clips:
            digest.update(f"{clip.clip_id}\0{clip.source_path}\0{clip.split}\0".encode())
            digest.update(np.asarray(clip.labels, np.uint8).tobytes())
        return digest.hexdigest()


def partial_dir(out: Path) -> Path:
    """Where an unfinished store at ``out`` is built."""
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    """The file a writer of the store at ``out`` holds locked (and its pid in) while it runs."""
    return out.with_name(out.name + ".partial.lock")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreBusyError(ConfigError):
    """Another process is writing the same store."""


def _holder(fd: int) -> str:
    """``pid N``: the process holding the lock on ``fd``'s file, as it wrote itself there."""
    for _ in range(100):  # the holder writes its pid just after locking; give it a moment
        text = os.pread(fd, 32, 0).decode(errors="replace").split()
        if text:
            return f"pid {text[0]}"
        time.sleep(0.01)
    return "pid unknown"


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not deleted or replaced)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def drop_inherited_lock(fd: int, path: str) -> None:
    """Close a forked child's copy of a ``WriterLock``'s descriptor ``fd`` on ``path``, so
    that the lock lives exactly as long as the process that took it (a process pool's
    initializer); a child that did not inherit it has nothing to close."""
    with contextlib.suppress(OSError):
        if _is_file_at(fd, Path(path)):
            os.close(fd)


class WriterLock:
    """An exclusive OS file lock (``flock``) on ``lock_path(out)``, which holds the pid.

    The OS drops the lock when its process ends, however it ends, so a killed writer
    leaves no stale lock; ``release`` also deletes the file. A second writer of ``out``
    gets ``StoreBusyError`` at once, naming the first one's pid.
    """

    def __init__(self, out: Path) -> None:
        self.path = lock_path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise StoreBusyError(
                    f"--out {out} is being written by another tagger prepare ({holder}); wait "
                    "for it to finish, or stop it and run this command again to resume its work"
                ) from None
            if _is_file_at(fd, self.path):
                break
            os.close(fd)  # its holder released and deleted it meanwhile: lock a fresh one
        self.fd: int | None = fd
        try:
            os.ftruncate(fd, 0)  # a killed writer's pid may still be there
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            self.release()
            raise

    def release(self) -> None:
        """Delete the lock file and unlock it (idempotent)."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


@dataclass
class _Entry:
    """One plan clip the writer has handled: ``skipped`` (the reason) or kept, with its
    truncation note, and for a v2 store its stored ``samples`` and, when it was padded,
    the ``decoded`` length it had before."""

    index: int
    skipped: str | None
    truncated: str | None
    samples: int | None = None
    decoded: int | None = None

    def line(self) -> str:
        """The entry as one line of the writer's log."""
        entry = {"i": self.index, "skipped": self.skipped, "truncated": self.truncated}
        if self.samples is not None or self.decoded is not None:
            entry |= {"samples": self.samples, "decoded": self.decoded}
        return json.dumps(entry) + "\n"

    @classmethod
    def parse(cls, line: str) -> _Entry:
        entry = json.loads(line)
        return cls(
            entry["i"], entry["skipped"], entry.get("truncated"),
            entry.get("samples"), entry.get("decoded"),
        )  # fmt: skip


class StoreWriter:
    """Appends decoded clips to ``OUT.partial/`` in plan order; ``finish`` renames it to ``OUT``.

    ``add`` buffers a clip (or the reason it was skipped); ``commit`` makes everything
    added so far durable. A v2 plan's tracks are logged with their lengths, so a resume
    knows how many bytes of audio are committed (the offsets are written by ``finish``).
    Killed at any point, a writer started again with the same plan continues after the last
    commit. The writer holds ``OUT``'s ``WriterLock`` from its
    creation to ``finish`` or ``close``, so a second writer of ``OUT`` fails at once.

    Args:
        out: the store directory to write.
        plan: what goes in it.
        restart: discard an unfinished ``OUT.partial`` instead of resuming it.
    """

    def __init__(self, out: Path, plan: StorePlan, restart: bool = False) -> None:
        self.out = out
        self.plan = plan
        self.partial = partial_dir(out)
        self.entries: list[_Entry] = []  # committed
        self._pending: list[_Entry] = []
        self._audio: BinaryIO | None = None
        self._done: TextIO | None = None
        self._created = False
        self.lock = WriterLock(out)
        try:
            if (out / META_FILE).is_file():
                raise ConfigError(
                    f"{out} is already a finished clip store; delete it or choose another --out"
                )
            if out.exists():
                raise ConfigError(f"{out} exists and is not a clip store; choose another --out")
            if restart:
                discard_partial(out)
            self.resumed = self.partial.exists()
            if self.resumed:
                self._resume()
            else:
                self._create()
            self._audio = open(self.partial / AUDIO_FILE, "ab")  # noqa: SIM115 (closed in finish)
            self._done = open(self.partial / _DONE_FILE, "a", encoding="utf-8")  # noqa: SIM115
        except BaseException:
            self.close()
            raise

    @property
    def next_index(self) -> int:
        """The plan index of the first clip not yet committed."""
        return len(self.entries)

    def _create(self) -> None:
        self.partial.mkdir(parents=True)
        self._created = True
        state = {"fingerprint": self.plan.fingerprint(), "clips": len(self.plan.clips)}
        (self.partial / _PLAN_FILE).write_text(json.dumps(state))
        (self.partial / AUDIO_FILE).touch()
        (self.partial / _DONE_FILE).touch()

    def _resume(self) -> None:
        plan_file = self.partial / _PLAN_FILE
        try:
            state = json.loads(plan_file.read_text())
        except (OSError, ValueError):  # none, or cut short by a kill while it was written
            state = {}
        if state.get("fingerprint") != self.plan.fingerprint():
            raise ConfigError(
                f"{self.partial} holds an unfinished prepare with other settings or sources; "
                "rerun it with the same arguments, or delete that directory to start afresh"
            )
        done_file = self.partial / _DONE_FILE
        text = done_file.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line cut by a kill is not committed
        self.entries = [_Entry.parse(line) for line in complete.splitlines()]
        kept = [entry for entry in self.entries if entry.skipped is None]
        if self.plan.version == FORMAT_VERSION:
            kept_bytes = len(kept) * self.plan.clip_samples * AUDIO_DTYPE.itemsize
        else:
            kept_bytes = sum(entry.samples for entry in kept) * AUDIO_DTYPE.itemsize
        audio_file = self.partial / AUDIO_FILE
        if audio_file.stat().st_size < kept_bytes:
            raise ConfigError(f"{audio_file} is shorter than its log says; delete {self.partial}")
        with open(done_file, "r+b") as f:
            f.truncate(len(complete.encode("utf-8")))
        with open(audio_file, "r+b") as f:
            f.truncate(kept_bytes)  # drop clips written after the last commit

    def add(
        self,
        index: int,
        clip: np.ndarray | None,
        skipped: str | None = None,
        truncated: str | None = None,
        decoded: int | None = None,
    ) -> None:
        """Append plan clip ``index``: int16 [clip_samples], or for a v2 plan a track of any
        length (zero-padded here to the plan's ``pad_samples``), with ``truncated``, the note
        that its file decoded shorter than its header says; or None with the reason it failed.
        ``decoded``: the samples its file decoded to, if known (a v1 clip padded from fewer
        is listed under ``padded``). A track of no samples is skipped, never stored."""
        if index != self.next_index + len(self._pending):
            raise ValueError(f"clips must be added in plan order; got {index}")
        if clip is not None and clip.size == 0:
            clip, skipped = None, f"no audio: it decodes to 0 samples at {self.plan.sample_rate} Hz"
        if clip is None:
            self._pending.append(_Entry(index, skipped or "skipped", None))
            return
        if self.plan.version == FORMAT_VERSION:
            if clip.shape != (self.plan.clip_samples,):
                raise ValueError(f"clip {index} has shape {clip.shape}")
            entry = _Entry(index, None, truncated)
            if decoded is not None and decoded < self.plan.clip_samples:
                entry.decoded = decoded
        else:
            if clip.ndim != 1:
                raise ValueError(f"track {index} has shape {clip.shape}")
            short = self.plan.pad_samples - len(clip)
            entry = _Entry(index, None, truncated, max(len(clip), self.plan.pad_samples))
            if short > 0:
                entry.decoded = len(clip)
                clip = np.concatenate([clip, np.zeros(short, clip.dtype)])
        self._audio.write(np.ascontiguousarray(clip, AUDIO_DTYPE).tobytes())
        self._pending.append(entry)

    def commit(self) -> None:
        """Make every added clip durable: audio first, then the log that counts it."""
        self._audio.flush()
        os.fsync(self._audio.fileno())
        for entry in self._pending:
            self._done.write(entry.line())
        self._done.flush()
        os.fsync(self._done.fileno())
        self.entries.extend(self._pending)
        self._pending = []

    def close(self) -> None:
        """Stop without finishing (after an error): the committed clips stay for a resume,
        a ``OUT.partial`` this writer created with nothing committed is deleted, and the
        lock is released. Does nothing after ``finish``."""
        for file in (self._audio, self._done):
            if file is not None:
                with contextlib.suppress(OSError):  # its unflushed bytes are not committed
                    file.close()
        if self._created and not self.entries and self.partial.is_dir():
            shutil.rmtree(self.partial, ignore_errors=True)
        self.lock.release()

    def _padded(self) -> dict[str, Any]:
        """meta.json's ``padded``: the clips or tracks zero-padded from fewer decoded samples."""
        plan, kept = self.plan, [e for e in self.entries if e.skipped is None]
        padded = [
            {"path": plan.clips[e.index].source_path, "clip_id": plan.clips[e.index].clip_id,
             "decoded_samples": e.decoded}
            for e in kept if e.decoded is not None
        ]  # fmt: skip
        return {"count": len(padded), "tracks": padded}

    def _track_meta(self) -> dict[str, Any]:
        """What meta.json says about a v2 store's tracks: their lengths and the padded ones."""
        kept = [e for e in self.entries if e.skipped is None]
        return {
            "max_samples": self.plan.max_samples,
            "min_samples": self.plan.pad_samples,
            "track_samples": _track_stats([e.samples for e in kept]),
        }

    def finish(self) -> Path:
        """Write labels, clip list and meta.json, then rename the directory to ``out``."""
        self.commit()
        self._audio.close()
        self._done.close()
        plan = self.plan
        if self.next_index != len(plan.clips):
            raise ValueError(f"{self.next_index} of {len(plan.clips)} clips written")

        def listed(reasons: list[tuple[int, str]]) -> list[dict[str, str]]:
            return [
                {"path": plan.clips[i].source_path, "clip_id": plan.clips[i].clip_id, "reason": r}
                for i, r in reasons
            ]

        entries = self.entries
        kept = [plan.clips[e.index] for e in entries if e.skipped is None]
        skipped = listed([(e.index, e.skipped) for e in entries if e.skipped is not None])
        truncated = listed([(e.index, e.truncated) for e in entries if e.truncated])  # kept only
        labels = np.zeros((len(kept), len(plan.tag_names)), np.uint8)
        for row, clip in enumerate(kept):
            labels[row] = clip.labels
        counts = Counter(clip.split for clip in kept)
        meta = {
            "format_version": plan.version,
            **plan.meta,
            "sample_rate": plan.sample_rate,
            "clip_samples": plan.clip_samples,
            "clip_seconds": plan.clip_samples / plan.sample_rate if plan.clip_samples else None,
            "dtype": "int16",
            "clips": len(kept),
            "counts": {split: counts.get(split, 0) for split in ("train", "val", "test")},
            "tag_names": plan.tag_names,
            "skipped": skipped,
            "truncated_files": plan.truncated,
            "truncated": truncated,
            "padded": self._padded(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        written = [LABELS_FILE, CLIPS_FILE, META_FILE]
        if plan.version == TRACKS_FORMAT_VERSION:
            meta |= self._track_meta()
            written.insert(0, OFFSETS_FILE)
        try:
            if plan.version == TRACKS_FORMAT_VERSION:
                samples = [e.samples for e in entries if e.skipped is None]
                offsets = np.concatenate([[0], np.cumsum(samples, dtype=np.int64)])
                np.save(self.partial / OFFSETS_FILE, offsets.astype(np.int64))
            np.save(self.partial / LABELS_FILE, labels)
            with open(self.partial / CLIPS_FILE, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["clip_id", "path", "split"])
                writer.writerows([clip.clip_id, clip.source_path, clip.split] for clip in kept)
            (self.partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            for name in (AUDIO_FILE, *written):
                _fsync(self.partial / name)
        except BaseException:  # e.g. a full disk: leave OUT.partial as a resume expects it
            for name in written:
                (self.partial / name).unlink(missing_ok=True)
            raise
        (self.partial / _PLAN_FILE).unlink()
        (self.partial / _DONE_FILE).unlink()
        os.replace(self.partial, self.out)
        _fsync(self.out.parent)
        self._created = False
        self.lock.release()
        return self.out


def _track_stats(samples: list[int]) -> dict[str, float]:
    """min, max, mean and total of the stored track lengths, in samples."""
    if not samples:
        return {"min": 0, "max": 0, "mean": 0.0, "total": 0}
    array = np.asarray(samples, np.int64)
    total = int(array.sum())
    return {"min": int(array.min()), "max": int(array.max()), "mean": total / len(array),
            "total": total}  # fmt: skip


def discard_partial(out: Path) -> None:
    """Delete an unfinished store at ``out`` (``tagger prepare --restart``); the caller holds
    ``out``'s ``WriterLock``."""
    shutil.rmtree(partial_dir(out), ignore_errors=True)


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
