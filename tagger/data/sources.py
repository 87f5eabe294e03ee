"""Clip sources: where the samples of a batch come from, read in one call per batch."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ClipSource(Protocol):
    """Clips, ``shape`` (clips, samples), read a batch of windows at a time.

    The store's ``StoreAudio``, the coursework's ``NpyClipFiles`` and ``ArrayClips`` (clips
    held in memory) are the three. Clips are of equal length (``shape[1]``), except in a
    source of tracks (a version 2 store): it also has ``lengths``, int64 [clips], the
    samples of each track (``shape[1]`` is then the longest), and ``read`` zero-fills the
    part of a window that runs past its track's end. ``track_lengths`` tells them apart.
    """

    shape: tuple[int, int]
    dtype: np.dtype  # what ``read`` returns: int16 where the clips are int16, else float32

    def read(self, indices: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Windows of ``length`` samples of clips ``indices`` [B], window w of clip b starting
        at sample ``starts[b, w]`` (``starts`` [B, W], or [1, W] for the same windows in every
        clip): [B, W, 1, length] in ``dtype``, written straight into that one array."""
        ...


def track_lengths(source: ClipSource) -> np.ndarray | None:
    """The samples of each track of a source of tracks: int64 [clips]; None for a source of
    equal-length clips (each ``source.shape[1]`` long)."""
    return getattr(source, "lengths", None)


def runs(
    indices: np.ndarray, starts: np.ndarray, out: np.ndarray
) -> list[tuple[int, int, np.ndarray]]:
    """The copies that fill ``out`` [B, W, 1, length] as ``ClipSource.read`` describes it:
    (clip, first sample, the part of ``out`` to fill), clip by clip in batch order.

    A clip's windows that follow one another (the model's consecutive windows) are one run,
    so each clip is then one copy; windows elsewhere (random windows) are a copy each.
    """
    batch, n_windows, _, length = out.shape
    if (starts[:, 1:] - starts[:, :-1] == length).all():
        starts, parts = starts[:, :1], out.reshape(batch, 1, n_windows * length)
    else:
        parts = out.reshape(batch, n_windows, length)
    rows = starts.tolist() * (batch if len(starts) == 1 else 1)  # [1, W] is every clip's
    return [
        (clip, start, part)
        for clip, clip_starts, clip_parts in zip(indices.tolist(), rows, parts, strict=True)
        for start, part in zip(clip_starts, clip_parts, strict=True)
    ]


class ArrayClips:
    """Clips held in one array [clips, samples] (the built-in data; any array in memory).

    ``read`` gives int16 for int16 arrays, else float32.
    """

    def __init__(self, audio: np.ndarray) -> None:
        if audio.ndim != 2:
            raise ValueError(f"audio must be [clips, samples]; got shape {audio.shape}")
        self.audio = audio
        self.shape = audio.shape
        self.dtype = np.dtype(np.int16 if audio.dtype == np.int16 else np.float32)

    def read(self, indices: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """See ``ClipSource.read``: slices of the array, [B, W, 1, length]."""
        out = np.empty((len(indices), np.shape(starts)[1], 1, length), self.dtype)
        for clip, start, part in runs(indices, starts, out):
            part[:] = self.audio[clip, start : start + part.size]
        return out
