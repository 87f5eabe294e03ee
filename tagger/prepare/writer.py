"""Writing a clip store (``tagger/data/store.py`` describes the format and reads it).

``StoreWriter`` builds ``STORE.partial/`` by appending clips and renames it to ``STORE``
only when complete, so a directory named ``STORE`` is always a finished store. An
interrupted writer resumes from its last committed batch of clips. One writer at a time:
each holds an exclusive lock on ``STORE.partial.lock`` (``writer_lock``: a
``tagger.lock.ProcessLock``, released when its process ends however it ends) from start
to finish.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from tagger.data.store import (
    AUDIO_DTYPE,
    AUDIO_FILE,
    CLIPS_FILE,
    FORMAT_VERSION,
    LABELS_FILE,
    META_FILE,
    OFFSETS_FILE,
    TRACKS_FORMAT_VERSION,
    partial_dir,
)
from tagger.errors import ConfigError
from tagger.lock import ProcessLock
from tagger.run_files import fsync

#: Tracks of a v2 store shorter than this are zero-padded to it (``prepare --min-seconds``).
#: 0: none is; every track is stored at its real length, since the window it will be read
#: in is only known at training time. The reader then pads a track shorter than a window
#: up to one window (zero-fills the window past its end), and no further.
DEFAULT_MIN_SECONDS = 0.0
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


def lock_path(out: Path) -> Path:
    """The file a writer of the store at ``out`` holds locked (and its pid in) while it runs."""
    return out.with_name(out.name + ".partial.lock")


def writer_lock(out: Path) -> ProcessLock:
    """The lock a writer of the store at ``out`` holds from start to finish: an OS file lock
    on ``lock_path(out)``, which holds its pid (``tagger.lock.ProcessLock``). The OS drops
    it when its process ends, however it ends, and the decoding processes the writer forks
    do not keep it, so a killed writer leaves no stale lock; ``release`` also deletes the
    file. A second writer of ``out``, even in the same process, gets ``LockBusyError`` at
    once, naming the first one's pid."""
    return ProcessLock(
        lock_path(out),
        lambda holder: (
            f"--out {out} is being written by another tagger prepare ({holder}); wait for it "
            "to finish, or stop it and run this command again to resume its work"
        ),
        reentrant=False,
    )


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
    commit. The writer holds ``OUT``'s ``writer_lock`` from its
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
        self.lock = writer_lock(out)
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
                fsync(self.partial / name)
        except BaseException:  # e.g. a full disk: leave OUT.partial as a resume expects it
            for name in written:
                (self.partial / name).unlink(missing_ok=True)
            raise
        (self.partial / _PLAN_FILE).unlink()
        (self.partial / _DONE_FILE).unlink()
        os.replace(self.partial, self.out)
        fsync(self.out.parent)
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
    ``out``'s ``writer_lock``."""
    shutil.rmtree(partial_dir(out), ignore_errors=True)
