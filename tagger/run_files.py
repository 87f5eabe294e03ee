"""The one writer of every file a run or command leaves: ``metrics.json``,
``predictions.csv``, figures, reports, exported models, checkpoints.

``replacing`` hands out a temporary name beside each target; when the body has written
them, each is flushed to disk (fsync) and renamed over its target, so a crash never leaves
a half-written file that looks finished. On any ``OSError`` (no space, read-only, no
permission, a file where a folder should be, a failing device) the temporaries are
removed, every target is left as it was, and ``OutputError`` is raised naming the file,
the reason and the fix. ``atomic_write``, ``write_text`` and ``write_json`` are its
one-file forms.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: A fix that ends so is followed by how the command writes elsewhere, where it says.
ELSEWHERE = "write elsewhere"
#: errno -> (reason, fix) for the file-system failures a user can act on; ``{folder}`` is
#: the folder of the file being written, ``{where}`` the file or folder in the way.
_FAILURES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device",
                   "free space on that file system or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or write elsewhere"),
    errno.EROFS: ("read-only file system", "write elsewhere"),
    errno.EACCES: ("permission denied", "make {folder} writable or write elsewhere"),
    errno.EPERM: ("operation not permitted", "make {folder} writable or write elsewhere"),
    errno.ENOTDIR: ("{where} is a file where a folder should be",
                    "move that file away or write elsewhere"),
    errno.EEXIST: ("{where} is a file where a folder should be",
                   "move that file away or write elsewhere"),
    errno.EISDIR: ("{where} is a folder", "move it away or choose another file name"),
    errno.EIO: ("input/output error (the device failed)", "check the device or write elsewhere"),
    errno.ENAMETOOLONG: ("the file name is too long", "choose a shorter path"),
}  # fmt: skip


def _filename(error: OSError) -> Path | None:
    """The path an ``OSError`` names, if any."""
    name = error.filename
    if isinstance(name, (str, bytes, os.PathLike)):
        return Path(os.fsdecode(name))
    return None


def _in_the_way(path: Path) -> Path:
    """The file that stands where a folder of ``path`` should be (``path`` if none is found)."""
    for candidate in (path, *path.parents):
        if candidate.is_symlink() or (candidate.exists() and not candidate.is_dir()):
            return candidate
    return path


def reason_and_fix(error: OSError, path: Path) -> tuple[str, str]:
    """What went wrong in ``error`` (raised while writing ``path``) and what to do, in words."""
    reason, fix = _FAILURES.get(
        error.errno or 0, (error.strerror or str(error), "check that the folder can be written")
    )
    where = _filename(error) or path
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        where = _in_the_way(where)
    return reason.format(where=where), fix.format(folder=path.parent)


def _said(fix: str, elsewhere: str) -> str:
    """``fix``, followed by ``elsewhere`` (how to write elsewhere) when it ends so."""
    return f"{fix} ({elsewhere})" if elsewhere and fix.endswith(ELSEWHERE) else fix


class OutputError(OSError):
    """A file that cannot be written, named in one line with the reason and the fix:
    ``cannot write PATH: REASON (NOTE); FIX``.

    An ``OSError`` (its ``errno`` is the failure's) rather than a ``ConfigError``: the
    file system failed, not the input, and the command line exits with status 1.
    """

    def __init__(self, path: Path, reason: str, fix: str, note: str = "",
                 error_number: int | None = None) -> None:  # fmt: skip
        super().__init__(f"cannot write {path}: {reason}")
        self.errno = error_number
        self.path, self.reason, self.fix, self.note = path, reason, fix, note

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason, self.fix, self.note, self.errno)

    def __str__(self) -> str:
        return self.line()

    def line(self, elsewhere: str = "") -> str:
        """The one line; ``elsewhere`` (e.g. ``paths.log_dir=DIR``) says how to write
        elsewhere, after a fix that ends so."""
        note = f" ({self.note})" if self.note else ""
        return f"cannot write {self.path}: {self.reason}{note}; {_said(self.fix, elsewhere)}"

    @classmethod
    def of(cls, path: Path, error: OSError, note: str = "") -> OutputError:
        """The error for ``error`` raised while writing ``path``; ``note`` is added after
        the reason (e.g. what was kept)."""
        if isinstance(error, OutputError):
            return error
        reason, fix = reason_and_fix(error, path)
        return cls(path, reason, fix, note, error.errno)


def describe_os_error(error: OSError, elsewhere: str = "") -> str:
    """One line for any ``OSError``: an ``OutputError``'s own, else the path it names (if
    any), the reason and the fix; ``elsewhere`` as in ``OutputError.line``."""
    if isinstance(error, OutputError):
        return error.line(elsewhere)
    path = _filename(error)
    if path is None:
        return error.strerror or str(error)
    reason, fix = reason_and_fix(error, path)
    named = reason if reason.startswith(str(path)) else f"{path}: {reason}"
    return f"{named}; {_said(fix, elsewhere)}"


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: a hidden name beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync(path: Path) -> None:
    """Flush ``path``'s contents (a file, or a folder's entries) to the device (a full
    disk with delayed allocation says so here, not after the rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    """Remove a temporary, if it was created; a failure to remove it is not the error."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(*paths: str | Path, note: str = "") -> Iterator[tuple[Path, ...]]:
    """The one gate for output files: yields a temporary beside each of ``paths`` (their
    folders are made); once the body has written them all, each is fsynced and renamed
    over its target, in order.

    On an ``OSError`` in the body or after it, every temporary is removed, the targets not
    yet replaced are left as they were, and ``OutputError`` names the target whose write
    failed (its temporary named in the error, else the first), with ``note`` after the
    reason. Any other exception removes the temporaries and passes through.
    """
    targets = [Path(p) for p in paths]
    temporaries = [temporary_path(p) for p in targets]
    failed = targets[0]
    try:
        for target in targets:
            failed = target
            if target.exists() and not target.is_file():  # a folder, device, pipe or socket
                raise OutputError(target, "it is there and is not a plain file",
                                  "move it away or choose another file name", "",
                                  errno.EEXIST)  # fmt: skip
            target.parent.mkdir(parents=True, exist_ok=True)
        failed = targets[0]
        yield tuple(temporaries)
        for target, tmp in zip(targets, temporaries, strict=True):
            failed = target
            fsync(tmp)
            tmp.replace(target)
    except OSError as error:
        for tmp in temporaries:
            _discard(tmp)
        named = {str(tmp): target for tmp, target in zip(temporaries, targets, strict=True)}
        raise OutputError.of(named.get(str(error.filename), failed), error, note) from None
    except BaseException:
        for tmp in temporaries:
            _discard(tmp)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], object], note: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary beside ``path``, fsync it and rename it to
    ``path`` (``replacing``); raises ``OutputError`` naming ``path`` on any ``OSError``."""
    with replacing(path, note=note) as (tmp,):
        write(tmp)
    return Path(path)


def _json_safe(value: Any) -> Any:
    """NaN/inf become null, so the file is valid JSON for every reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: str | Path, data: bytes, note: str = "") -> Path:
    """Write ``data`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), note)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(_json_safe(data), indent=2, default=str) + "\n")


def write_predictions(
    path: str | Path,
    clip_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    tag_names: Sequence[str],
) -> Path:
    """One row per clip: ``clip_id``, ``true_tags`` (``;``-separated) and a probability per tag."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "true_tags", *tag_names])
            for clip_id, row_labels, row_probs in zip(clip_ids, labels, probs, strict=True):
                true = [t for t, y in zip(tag_names, row_labels, strict=True) if y > 0.5]
                writer.writerow([clip_id, ";".join(true), *(f"{p:.6f}" for p in row_probs)])

    return atomic_write(path, write)
