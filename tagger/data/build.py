"""Build a clip store from a plan: decode files on every core, write them in order, resumably."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tagger.data.audio import AudioError, decode_clip
from tagger.data.store import StorePlan, StoreWriter


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decode_or_reason(path: Path, sample_rate: int, n_samples: int) -> np.ndarray | str:
    """``decode_clip``, or the reason the file cannot be a clip (runs in a worker process)."""
    try:
        return decode_clip(path, sample_rate, n_samples)
    except AudioError as error:
        return error.reason


def _decoded(
    plan: StorePlan, start: int, chunk: int, executor: Executor | None
) -> Iterator[tuple[int, list[np.ndarray | str]]]:
    """(first index, results) per chunk of plan clips from ``start``; with an executor, the
    next chunk decodes while the caller writes this one (two chunks in memory at most)."""
    args = (plan.sample_rate, plan.clip_samples)

    def submit(first: int) -> list[Future] | list[np.ndarray | str]:
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


def build_store(
    plan: StorePlan, out: Path, workers: int | None = None, chunk: int | None = None
) -> Path:
    """Decode every file of ``plan`` into a finished store at ``out``; returns ``out``.

    Args:
        plan: the clips, tags and format (see ``StorePlan``).
        out: the store directory; built in ``out.partial`` and renamed when complete. An
            existing ``out.partial`` from an interrupted run with the same plan is resumed.
        workers: decoding processes (default: every available core; 0 or 1 decodes in
            this process).
        chunk: files decoded between two commits (default 8 per worker); a killed run
            loses at most this many files of work.
    """
    workers = available_cores() if workers is None else workers
    chunk = chunk or 8 * max(workers, 1)
    writer = StoreWriter(out, plan)
    start = writer.next_index
    bar = tqdm(total=len(plan.clips), initial=start, unit="file", desc=f"prepare {out.name}")
    executor = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for first, results in _decoded(plan, start, chunk, executor):
            for index, result in enumerate(results, first):
                if isinstance(result, str):
                    writer.add(index, None, skipped=result)
                else:
                    writer.add(index, result)
            writer.commit()
            bar.update(len(results))
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return writer.finish()
