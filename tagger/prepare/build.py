"""Build a clip store from a plan: decode files on every core, write them in order, resumably.

The decoding processes end with the prepare that started them, however it ends: on an
error, SIGINT or SIGTERM it stops them before it exits, and each asks the kernel
(``PR_SET_PDEATHSIG`` on Linux) to end it should its parent be killed outright (SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from types import FrameType

import numpy as np
from tqdm import tqdm

from tagger.prepare.audio import AudioError, fit_length, middle, read_audio, to_int16
from tagger.prepare.writer import StorePlan, StoreWriter

#: ``prctl`` option: the signal a process gets when its parent ends (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: A decoded file: (int16 clip [n_samples] or track [its samples], truncation note or None,
#: the samples it decoded to before any crop or padding), or (None, why not, None).
Decoded = tuple[np.ndarray | None, str | None, int | None]


def decode_or_reason(
    path: Path, sample_rate: int, n_samples: int | None, max_samples: int | None = None
) -> Decoded:
    """``path`` as a store clip (``n_samples`` given: cropped or zero-padded to it) or track
    (None: the whole file, or its middle ``max_samples``), int16, its truncation note and
    the samples it decoded to; or (None, the reason the file cannot be a clip, None), e.g.
    one that holds no samples at ``sample_rate``; runs in a worker process."""
    try:
        samples, truncated = read_audio(path, sample_rate)
    except AudioError as error:
        return None, error.reason, None
    if not len(samples):  # e.g. a few samples at a higher rate, resampled to none
        return None, f"no audio: it decodes to 0 samples at {sample_rate} Hz", None
    if n_samples is None:
        return to_int16(middle(samples, max_samples)), truncated, len(samples)
    return to_int16(fit_length(samples, n_samples)), truncated, len(samples)


def die_with_parent(parent: int) -> None:
    """In a decoding process: end when process ``parent`` ends, even by SIGKILL (Linux:
    ``PR_SET_PDEATHSIG``), and leave SIGINT to the parent, which stops its workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request above was made
        os._exit(1)
    if not sys.platform.startswith("linux"):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Where the kernel cannot end a worker with its parent: look every second."""
    while os.getppid() == parent:
        threading.Event().wait(1.0)
    os._exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a prepare stops as on Ctrl-C."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the body runs in the main thread, SIGTERM raises ``Terminated`` (whose
    handlers stop the workers and keep the committed clips), then is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous: Callable | int | None = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


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
    clip, note, samples = decoded
    if clip is None or (note and truncated == "skip"):
        writer.add(index, None, skipped=note)
    else:
        writer.add(index, clip, truncated=note, decoded=samples)


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
            Raises ``LockBusyError`` at once while another process writes ``out``.
        workers: decoding processes (default: every available core; 0 or 1 decodes in
            this process).
        chunk: files decoded between two commits (default 8 per worker); a killed run
            loses at most this many files of work.
        restart: discard an interrupted ``out.partial`` instead of resuming it.
    """
    workers = available_cores() if workers is None else workers
    chunk = chunk or 8 * max(workers, 1)
    with _sigterm_interrupts():
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
    executor = (  # forked workers close their copy of the writer's lock (tagger.lock)
        ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))
        if workers > 1
        else None
    )
    try:
        for first, results in _decoded(plan, start, chunk, executor):
            for index, decoded in enumerate(results, first):
                _add(writer, index, decoded, plan.truncated)
            writer.commit()
            bar.update(len(results))
    except BaseException:
        if executor is not None:
            _stop(executor)
            executor = None
        raise
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown()


def _stop(executor: ProcessPoolExecutor) -> None:
    """End an executor's processes now, mid-file (after an error or a signal): nothing they
    decode would be committed."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.terminate()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=5)
