"""What a process holds ends with it, however it ends (SIGKILL included): its locks and,
on Linux, the children it forks.

``ProcessLock(path, busy)`` takes an exclusive ``flock`` on ``path`` (created, and holding
the pid) at once, or raises ``LockBusyError`` with ``busy("pid N")``, naming the holder:
one writer at a time. The OS drops the lock when its process ends, so a killed holder
never leaves a stale lock. A forked child (a DataLoader worker, a decoding process of
``tagger prepare``) would share the lock and keep it past its parent's death; each one
closes its copy as it starts. Within one process the lock is re-entrant (taking it again
only counts), unless it is taken with ``reentrant=False`` (a store's writer: a second
writer in the same process is refused too). The one lock of run folders, checkpoint
folders (``tagger.train``) and clip stores (``tagger.prepare.writer``).

Why not the ``filelock`` library: measured with filelock 4.3.1 (the version torch
installs; ``FileLock`` is its ``flock`` lock), it keeps two of the guarantees (a killed
holder's lock is free at once; a child forked by the holder does not keep it once its fork
hooks have run) but not the third: a refused second holder learns nothing of the first
(the error says only that the lock "could not be acquired", the lock file stays empty and
its ``pid`` attribute raises AttributeError), so the one-line refusal could not name the
pid. It also leaves the lock file behind after release. Writing the pid into the file and
deleting it safely on release is most of the code below (the inode check of
``_is_file_at``), so filelock would save nothing.

``children_end_with_this_process()``: the children that the calling thread forks inside
the block (DataLoader workers) are killed by the OS when this process ends, instead of
lingering as orphans until they notice.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from tagger.errors import ConfigError

#: The locks this process holds: lock file -> [descriptor, times taken].
_held: dict[Path, list[int]] = {}
_fork_hook: list[bool] = []  # whether _in_child is registered (at first use)
#: While ``children_end_with_this_process`` runs: [this pid, libc's prctl, the thread
#: that entered it] (set in the parent, so that a forked child loads nothing).
_die_with: list[Any] = []
_forked_by_owner: list[bool] = [False]  # set just before each fork, in the forking thread
_PR_SET_PDEATHSIG = 1


class LockBusyError(ConfigError):
    """Another live process holds the lock."""


def _in_child() -> None:
    """In a forked child: close the copies of the parent's locks (they stay the parent's),
    and in ``children_end_with_this_process`` ask to be killed when the parent ends."""
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    if _die_with and _forked_by_owner[0]:  # the OS ties it to the thread that forked
        parent, prctl, _ = _die_with
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it ended before the request was made
            os._exit(1)
    _die_with.clear()  # the child's own children are its own business


def _before_fork() -> None:
    _forked_by_owner[0] = bool(_die_with) and _die_with[2] == threading.get_ident()


def _hook_forks() -> None:
    if not _fork_hook:
        os.register_at_fork(before=_before_fork, after_in_child=_in_child)
        _fork_hook.append(True)


@contextlib.contextmanager
def children_end_with_this_process() -> Iterator[None]:
    """Inside the block, every child that this thread forks gets SIGKILL from the OS when
    this process ends; Linux only (elsewhere nothing changes)."""
    if not sys.platform.startswith("linux") or _die_with:
        yield
        return
    _hook_forks()
    _die_with[:] = [os.getpid(), ctypes.CDLL(None, use_errno=True).prctl, threading.get_ident()]
    try:
        yield
    finally:
        _die_with.clear()


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


class ProcessLock:
    """An exclusive ``flock`` on the file ``path``, which holds the pid; ``release`` (or the
    end of a ``with`` block) unlocks and deletes it. ``busy(holder)`` is the one-line
    message of the ``LockBusyError`` raised when another process holds it, or with
    ``reentrant=False`` this one already does."""

    def __init__(self, path: Path, busy: Callable[[str], str], reentrant: bool = True) -> None:
        self.path = Path(os.path.realpath(path))
        self._taken = False
        if self.path in _held:
            if not reentrant:
                raise LockBusyError(busy(f"pid {os.getpid()}"))
            _held[self.path][1] += 1
            self._taken = True
            return
        _hook_forks()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LockBusyError(busy(holder)) from None
            if _is_file_at(fd, self.path):
                break
            os.close(fd)  # its holder released and deleted it meanwhile: lock a fresh one
        try:
            os.ftruncate(fd, 0)  # a killed holder's pid may still be there
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # e.g. a full disk: leave no empty lock file behind
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise
        _held[self.path] = [fd, 1]
        self._taken = True

    def release(self) -> None:
        """Give this hold up; the last one deletes the file and unlocks it (idempotent)."""
        if not self._taken:
            return
        self._taken = False
        entry = _held.get(self.path)
        if entry is None:  # forked child: the lock is the parent's
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self.path]
            self.path.unlink(missing_ok=True)
            os.close(entry[0])

    def __enter__(self) -> ProcessLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        self.release()
