"""What tagging audio files takes in and gives out, with no model attached: the audio files a
command's arguments name (``audio_files``), the windows cut from a file (``window_view``),
one file's tag probabilities (``Prediction``) and its taggram (``Taggram``).

Shared by a checkpoint's tagger (``tagger.predict.Tagger``) and a bundle's
(``tagger.bundle.BundleTagger``); it imports numpy alone, so that ``tagger predict BUNDLE``
runs where torch is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.errors import ConfigError

#: Files a folder argument contributes (case-insensitive suffixes).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
#: Windows per forward pass: bounds memory on long files.
WINDOWS_PER_BATCH = 32


@dataclass
class Taggram:
    """One file's per-window tag probabilities: ``starts_s`` [n], each window's start in
    seconds, ``hop_s`` seconds apart, and ``probabilities`` [n, K], the sigmoid of each
    window's logits."""

    starts_s: np.ndarray
    hop_s: float
    probabilities: np.ndarray


@dataclass
class Prediction:
    """One file's tag probabilities: ``probabilities`` [K], in the tagger's tag order;
    ``truncated``: why the file decoded shorter than its header says, or None;
    ``taggram``: its windows' probabilities, when asked for."""

    path: Path
    windows: int
    probabilities: np.ndarray
    truncated: str | None = None
    taggram: Taggram | None = None

    def top(self, tag_names: list[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable tags and their probabilities, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(tag_names[i], float(self.probabilities[i])) for i in order]


def window_view(samples: np.ndarray, window: int, hop: int | None = None) -> np.ndarray:
    """Mono samples [S] -> windows [n, 1, window] starting every ``hop`` samples (default:
    ``window``, consecutive ones), n = max(1, 1 + (S - window) // hop); a file shorter than
    a window is zero-padded to one, a remainder shorter than a window is dropped. A view:
    overlapping windows are not copied."""
    if len(samples) < window:
        samples = np.pad(samples, (0, window - len(samples)))
    view = np.lib.stride_tricks.sliding_window_view(samples, window)[:: hop or window]
    return view[:, None, :]


def audio_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to tag and what was left out: files as given; each folder replaced by its
    audio files (``AUDIO_SUFFIXES``, searched recursively, linked folders followed once,
    sorted), and what the folder holds besides, (path, why), to be named.

    A path that does not exist is kept, so that tagging it reports it as missing. A folder
    with no audio file raises ``ConfigError`` naming it: no input is dropped unsaid.
    """
    found: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        files, others = _folder_audio(path)
        if not files:
            raise ConfigError(
                f"{path} is a folder with no {', '.join(AUDIO_SUFFIXES)} file (searched "
                "recursively); give audio files or folders that hold some"
            )
        found += files
        left_out += others
    return found, left_out


def _folder_audio(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The audio files under ``folder``, sorted, and (path, why) for what else is there: other
    files, folders that cannot be read, links back to a folder already searched."""
    files: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def unreadable(error: OSError) -> None:
        left_out.append((Path(error.filename or folder), f"unreadable folder ({error.strerror})"))

    for root, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link to a folder searched already (or a loop)
            left_out.append((Path(root), "a link to a folder searched already"))
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in names:
            path = Path(root) / name
            if path.suffix.lower() in AUDIO_SUFFIXES:
                files.append(path)
            else:
                why = f"not {', '.join(AUDIO_SUFFIXES)}" if path.exists() else "a broken link"
                left_out.append((path, why))
    return sorted(files), sorted(left_out)


def taggram_names(files: Iterable[Path]) -> dict[Path, str]:
    """Each file's taggram name (``write_taggram``'s ``name``): its file name, e.g.
    ``song.mp3``; files of the same name in different folders get as many of their last
    folders as tell them apart, e.g. ``rock/song.mp3`` and ``jazz/song.mp3``. The same file
    given twice gets one name."""
    by_name: dict[str, set[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, set()).add(path.resolve())
    names: dict[Path, str] = {}
    for path in files:
        same = by_name[path.name]
        depth = 1
        while len({_last(p, depth) for p in same}) < len(same):
            depth += 1
        names[path] = _last(path.resolve(), depth)
    return names


def _last(path: Path, depth: int) -> str:
    """The last ``depth`` parts of an absolute path, joined by ``/`` (the root left out)."""
    return "/".join(path.parts[1:][-depth:])
