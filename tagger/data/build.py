"""Build a clip store from a plan: decode files on every core, write them in order, resumably."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tagger.data.audio import AudioError, decode_clip, decode_track
from tagger.data.store import StorePlan, StoreWriter, drop_inherited_lock


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: A decoded file: (int16 clip [n_samples] or track [its samples], truncation note or None),
#: or (None, why not).
Decoded = tuple[np.ndarray | None, str | None]


def decode_or_reason(
    path: Path, sample_rate: int, n_samples: int | None, max_samples: int | None = None
) -> Decoded:
    """``decode_clip`` (``n_samples`` given) or ``decode_track`` (None: the whole file, or its
    middle ``max_samples``): ``path`` as a store clip and its truncation note, or (None, the
    reason the file cannot be a clip); runs in a worker process."""
    try:
        if n_samples is None:
            return decode_track(path, sample_rate, max_samples)
        return decode_clip(path, sample_rate, n_samples)
    except AudioError as error:
        return None, error.reason


def _decoded(
    plan: StorePlan, start: int, chunk: int, executor: Executor | None
) -> Iterator[tuple[int, list[Decoded]]]:
    """(first index, results) per chunk of plan clips from ``start``; with an executor, the
    next chunk decodes while the caller writes this one (two chunks in memory at most)."""
    args = (plan.sample_rate, plan.clip_samples)
    if plan.clip_samples is None:
        args += (plan.max_samples,)

    def submit(first: int) -> list[Future] | list[Decoded]:
        clips = plan.clips[first : first + chunk]
        if executor is None:
            return [decode_or_reason(clip.path, *args) for clip in clips]
        return [executor.submit(decode_or_reason, clip.path, *args) for clip in clips]

    firsts = range(start, len(plan.clips), chunk)
    pending = submit(firsts[0]) if firsts else []
    for position, first in enumerate(firsts):
        current = pending
        if position + 1 < len(firsts):
            pending = submit(firsts[position + 1])
        yield first, [item.result() if isinstance(item, Future) else item for item in current]


def _add(writer: StoreWriter, index: int, decoded: Decoded, truncated: str) -> None:
    """Hand one decoded file to the writer: kept, or skipped with its reason (a truncated
    file too when ``truncated`` is ``skip``)."""
    clip, note = decoded
    if clip is None or (note and truncated == "skip"):
        writer.add(index, None, skipped=note)
    else:
        writer.add(index, clip, truncated=note)


def build_store(
    plan: StorePlan,
    out: Path,
    workers: int | None = None,
    chunk: int | None = None,
    restart: bool = False,
) -> Path:
    """Decode every file of ``plan`` into a finished store at ``out``; returns ``out``.

    Args:
        plan: the clips, tags and format (see ``StorePlan``).
        out: the store directory; built in ``out.partial`` and renamed when complete. An
            existing ``out.partial`` from an interrupted run with the same plan is resumed.
            Raises ``StoreBusyError`` at once while another process writes ``out``.
        workers: decoding processes (default: every available core; 0 or 1 decodes in
            this process).
        chunk: files decoded between two commits (default 8 per worker); a killed run
            loses at most this many files of work.
        restart: discard an interrupted ``out.partial`` instead of resuming it.
    """
    workers = available_cores() if workers is None else workers
    chunk = chunk or 8 * max(workers, 1)
    writer = StoreWriter(out, plan, restart=restart)
    try:
        if writer.resumed:
            print(f"resuming the interrupted prepare in {writer.partial}", file=sys.stderr)
        _write_clips(writer, workers, chunk)
        return writer.finish()
    except BaseException:
        writer.close()
        raise


def _write_clips(writer: StoreWriter, workers: int, chunk: int) -> None:
    """Decode and commit the plan's clips from the writer's ``next_index`` on."""
    plan, start = writer.plan, writer.next_index
    bar = tqdm(total=len(plan.clips), initial=start, unit="file", desc=f"prepare {writer.out.name}")
    lock = (writer.lock.fd, str(writer.lock.path))
    executor = (
        ProcessPoolExecutor(workers, initializer=drop_inherited_lock, initargs=lock)
        if workers > 1
        else None
    )
    try:
        for first, results in _decoded(plan, start, chunk, executor):
            for index, decoded in enumerate(results, first):
                _add(writer, index, decoded, plan.truncated)
            writer.commit()
            bar.update(len(results))
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
