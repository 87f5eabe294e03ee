"""Tagged clips as a loader indexes them: each clip's windows, random ones, or every one.

Clips of one length (a v1 store, the coursework's copy, the built-in data) are cut into
``n_subclips`` consecutive windows from sample 0. Tracks of their own lengths (a v2 store)
are cut into ``n_subclips`` windows spread evenly over the whole track (``spread_starts``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tagger.data.sources import ClipSource, track_lengths
from tagger.errors import BadClipError, ConfigError


def spread_starts(lengths: np.ndarray, n_windows: int, length: int) -> np.ndarray:
    """Where ``n_windows`` windows of ``length`` samples spread evenly over tracks of
    ``lengths`` [B] start: int64 [B, n_windows]. Window w starts at
    round(w * (track - length) / (n_windows - 1)): the first at 0, the last ending at the
    track's end; one window sits in the middle; a track shorter than a window has every
    window at 0 (zero-filled past its end)."""
    room = np.maximum(np.asarray(lengths, np.int64) - length, 0)[:, None]
    if n_windows == 1:
        return room // 2
    w = np.arange(n_windows, dtype=np.int64)[None]
    return (2 * w * room + n_windows - 1) // (2 * (n_windows - 1))  # rounded half up


class ClipDataset(Dataset):
    """Tagged clips of a ``ClipSource``, each cut into ``n_subclips`` windows: consecutive
    from sample 0 for clips of one length, spread evenly over the track for tracks.

    Item ``i`` is a dict:
        ``audio``  [n_subclips, 1, subclip_len]: the first n_subclips * subclip_len samples
                   of clip i (or its spread windows) on the source's own scale (int16 scale
                   for MTAT): int16 when
                   stored as int16 (half the bytes to copy; the model converts a whole
                   batch at once), else float32;
        ``labels`` float32 [num_tags], 0/1;
        ``index``  int, the row of the clip (for ``clip_ids``).
    A ``DataLoader`` reads whole batches through ``__getitems__``: one ``read`` of the
    source, which copies each sample once, so the loader needs no collation
    (``collate_fn=default_convert``). Reading item by item and stacking (the default
    collate) copies every sample twice, and ``torch.stack`` splits the copy over the
    intra-op threads the training step is using: on 2 CPU cores a batch of 10 MTAT-sized
    clips took 83 ms that way (float32 items) and 1.5 ms this way (benchmarks/README.md).

    Args:
        source: the clips' samples [clips, samples].
        labels: [clips, num_tags], 0/1.
        clip_ids: one identifier per clip (named in errors about the clip).
        n_subclips: windows per clip.
        subclip_len: samples per window.
    """

    def __init__(
        self,
        source: ClipSource,
        labels: np.ndarray,
        clip_ids: Sequence[str],
        n_subclips: int,
        subclip_len: int,
    ) -> None:
        if not source.shape[0] == len(labels) == len(clip_ids):
            raise ValueError(
                f"source [clips, samples], labels [clips, tags] and clip_ids must agree; got "
                f"{source.shape}, {labels.shape} and {len(clip_ids)} ids"
            )
        if n_subclips < 1 or subclip_len < 1:
            raise ConfigError(
                f"data.n_subclips ({n_subclips}) and data.subclip_len ({subclip_len}) must be >= 1"
            )
        needed = n_subclips * subclip_len
        #: samples of each track: int64 [clips]; None for clips of one length
        self.lengths = track_lengths(source)
        if self.lengths is None and source.shape[1] < needed:
            raise ConfigError(
                f"clips have {source.shape[1]} samples but data.n_subclips x data.subclip_len = "
                f"{n_subclips} x {subclip_len} = {needed}; lower one of them"
            )
        self.source = source
        self.labels = labels
        self.clip_ids = list(clip_ids)
        self.n_subclips = n_subclips
        self.subclip_len = subclip_len
        #: where the consecutive windows of every clip start: [1, n_subclips]
        self.consecutive = np.arange(n_subclips, dtype=np.int64)[None] * subclip_len

    def __len__(self) -> int:
        return self.source.shape[0]

    def starts(self, indices: Sequence[int]) -> np.ndarray:
        """Where the windows of clips ``indices`` start: ``consecutive`` [1, n_subclips] for
        clips of one length, ``spread_starts`` [B, n_subclips] for tracks."""
        if self.lengths is None:
            return self.consecutive
        lengths = self.lengths[np.asarray(indices, dtype=np.int64)]
        return spread_starts(lengths, self.n_subclips, self.subclip_len)

    def short_tracks(self) -> int:
        """How many tracks are shorter than one window (their windows are zero-filled)."""
        return 0 if self.lengths is None else int((self.lengths < self.subclip_len).sum())

    def read(self, indices: Sequence[int], starts: np.ndarray, length: int) -> np.ndarray:
        """``self.source.read`` (windows [B, W, 1, length] at ``starts`` [B or 1, W]) of
        clips ``indices``; NaN or infinite samples raise ``BadClipError`` naming the clip."""
        indices = np.asarray(indices, dtype=np.int64)
        samples = self.source.read(indices, starts, length)
        if samples.dtype != np.int16:
            finite = np.isfinite(samples.reshape(len(indices), -1)).all(axis=1)
            if not finite.all():
                index = int(indices[np.argmin(finite)])
                raise BadClipError(
                    f"clip {self.clip_ids[index]} (row {index}) has NaN or infinite samples"
                )
        return samples

    def batch(self, indices: Sequence[int], starts: np.ndarray) -> dict[str, torch.Tensor]:
        """The batch of clips ``indices`` [B] with windows of ``subclip_len`` at ``starts``
        [B or 1, W]: ``audio`` [B, W, 1, subclip_len], ``labels`` float32 [B, num_tags],
        ``index`` int64 [B]."""
        return {
            "audio": torch.from_numpy(self.read(indices, starts, self.subclip_len)),
            "labels": torch.from_numpy(np.asarray(self.labels[np.asarray(indices)], np.float32)),
            "index": torch.as_tensor(indices, dtype=torch.int64),
        }

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of clips ``indices``, each cut into its windows (``starts``)."""
        return self.batch(indices, self.starts(indices))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return _only_item(self.__getitems__([index]))


def _only_item(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | int]:
    """The item of a one-clip batch: ``audio`` [windows, 1, T], ``labels`` [K], ``index`` int."""
    index = int(batch["index"][0])
    return {"audio": batch["audio"][0], "labels": batch["labels"][0], "index": index}


class RandomWindows(Dataset):
    """Training view of a ``ClipDataset``: ``n_windows`` windows at random offsets per clip
    (anywhere in a track: starts from 0 to its length minus a window; 0 for a track
    shorter than a window).

    Items are keyed by ``(index, epoch)`` (see ``EpochShuffleSampler(with_epoch=True)``);
    the offsets of an epoch are drawn at once from a generator seeded by (seed, epoch),
    so a resumed run sees the windows an uninterrupted one would, whatever the loader
    workers, and ``DeviceBatches`` gathers the same windows without per-clip Python.
    """

    def __init__(self, clips: ClipDataset, n_windows: int, seed: int) -> None:
        if n_windows < 1:
            raise ConfigError(f"data.train_subclips must be >= 1, not {n_windows}")
        self.clips = clips
        self.n_windows = n_windows
        self.seed = seed
        self._drawn: tuple[int, np.ndarray] | None = None  # (epoch, its starts)

    def __len__(self) -> int:
        return len(self.clips)

    def epoch_starts(self, epoch: int) -> np.ndarray:
        """Where every clip's windows start in ``epoch``: int64 [clips, n_windows]."""
        if self._drawn is None or self._drawn[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            lengths = self.clips.lengths
            if lengths is None:
                last = self.clips.source.shape[1] - self.clips.subclip_len
            else:  # per track: [clips, 1]
                last = np.maximum(lengths - self.clips.subclip_len, 0)[:, None]
            self._drawn = (epoch, rng.integers(0, last + 1, size=(len(self), self.n_windows)))
        return self._drawn[1]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The batch of ``(index, epoch)`` keys, each clip cut at its windows of that epoch."""
        indices = [index for index, _ in keys]
        starts = np.stack([self.epoch_starts(epoch)[index] for index, epoch in keys])
        return self.clips.batch(indices, starts)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor | int]:
        return _only_item(self.__getitems__([key]))


class EveryWindow(Dataset):
    """Evaluation view of a ``ClipDataset`` (``data.eval_windows=all``): every whole window
    of each clip, consecutive from sample 0.

    That is ``clip samples // subclip_len`` windows per clip of one length, and
    ``max(1, track samples // subclip_len)`` per track (the tail shorter than a window is
    left out; a track shorter than a window is one zero-filled window). Tracks have
    different counts, and a batch holds clips of one count [B, windows, 1, subclip_len]:
    the data module batches tracks one at a time.
    """

    def __init__(self, clips: ClipDataset) -> None:
        self.clips = clips
        self.clip_ids = clips.clip_ids
        lengths = clips.lengths
        if lengths is None:
            lengths = np.full(len(clips), clips.source.shape[1], np.int64)
        #: windows of each clip: int64 [clips]
        self.counts = np.maximum(lengths // clips.subclip_len, 1)

    def __len__(self) -> int:
        return len(self.clips)

    def starts(self, indices: Sequence[int]) -> np.ndarray:
        """Where every window of clips ``indices`` starts: [1, windows]; the clips must have
        as many windows each."""
        counts = np.unique(self.counts[np.asarray(indices, dtype=np.int64)])
        if len(counts) > 1:
            raise ValueError(
                f"clips with {counts.tolist()} windows in one batch; batch tracks one at a time"
            )
        return np.arange(counts[0], dtype=np.int64)[None] * self.clips.subclip_len

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of clips ``indices``, each cut into every one of its windows."""
        return self.clips.batch(indices, self.starts(indices))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return _only_item(self.__getitems__([index]))
