"""Clips as arrays, cut into sub-clips for the model, and an epoch-seeded shuffle."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from tagger.config import ConfigError


class ClipArray(Protocol):
    """Clips of equal length: ``shape`` is (clips, samples), ``array[i]`` is clip i [samples].

    A numpy array or memmap is one; so are a store's ``MappedClips`` and the coursework's
    ``NpyClipFiles``, which read one clip at a time.
    """

    shape: tuple[int, ...]

    def __getitem__(self, index: int) -> np.ndarray: ...


class BadClipError(ConfigError):
    """A clip whose samples cannot be used; the message names the clip."""


class ClipDataset(Dataset):
    """Tagged clips held as one array of clips (in memory, memory-mapped or one file each).

    Item ``i`` is a dict:
        ``audio``  float32 [n_subclips, 1, subclip_len], the first n_subclips * subclip_len
                   samples of clip i, in the array's own scale (int16 scale for MTAT);
        ``labels`` float32 [num_tags], 0/1;
        ``index``  int, the row of the clip (for ``clip_ids``).

    Args:
        audio: [clips, samples], any real dtype (see ``ClipArray``).
        labels: [clips, num_tags], 0/1.
        clip_ids: one identifier per clip (named in errors about the clip).
        n_subclips: consecutive windows per clip.
        subclip_len: samples per window.
    """

    def __init__(
        self,
        audio: ClipArray,
        labels: np.ndarray,
        clip_ids: Sequence[str],
        n_subclips: int,
        subclip_len: int,
    ) -> None:
        if len(audio.shape) != 2 or not audio.shape[0] == len(labels) == len(clip_ids):
            raise ValueError(
                f"audio [clips, samples], labels [clips, tags] and clip_ids must agree; got "
                f"{audio.shape}, {labels.shape} and {len(clip_ids)} ids"
            )
        if n_subclips < 1 or subclip_len < 1:
            raise ConfigError(
                f"data.n_subclips ({n_subclips}) and data.subclip_len ({subclip_len}) must be >= 1"
            )
        needed = n_subclips * subclip_len
        if audio.shape[1] < needed:
            raise ConfigError(
                f"clips have {audio.shape[1]} samples but data.n_subclips x data.subclip_len = "
                f"{n_subclips} x {subclip_len} = {needed}; lower one of them"
            )
        self.audio = audio
        self.labels = labels
        self.clip_ids = list(clip_ids)
        self.n_subclips = n_subclips
        self.subclip_len = subclip_len

    def __len__(self) -> int:
        return self.audio.shape[0]

    def raw(self, index: int) -> np.ndarray:
        """All samples of clip ``index`` in their stored dtype [samples]; a clip with NaN or
        infinite samples raises ``BadClipError`` naming it."""
        samples = np.asarray(self.audio[index])
        if samples.dtype.kind == "f" and not np.isfinite(samples).all():
            raise BadClipError(
                f"clip {self.clip_ids[index]} (row {index}) has NaN or infinite samples"
            )
        return samples

    def clip(self, index: int) -> np.ndarray:
        """All samples of clip ``index``: float32 [samples] (checked as in ``raw``)."""
        return self.raw(index).astype(np.float32, copy=False)

    def item(self, index: int, samples: np.ndarray) -> dict[str, torch.Tensor | int]:
        """The item of clip ``index`` with windows ``samples`` [windows, subclip_len]."""
        return {
            "audio": torch.from_numpy(samples.reshape(-1, 1, self.subclip_len)),
            "labels": torch.from_numpy(np.asarray(self.labels[index], np.float32)),
            "index": index,
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        samples = self.clip(index)[: self.n_subclips * self.subclip_len]
        return self.item(index, samples)


def collate_clips(items: list[dict[str, torch.Tensor | int]]) -> dict[str, torch.Tensor]:
    """Items of ``ClipDataset``/``RandomWindows`` -> a batch: ``audio`` [B, windows, 1, T],
    ``labels`` [B, num_tags], ``index`` int64 [B].

    Stacks with numpy, a single-threaded copy: ``torch.stack`` (the default collate) splits
    the copy over the intra-op threads and, on a CPU busy with the training step, took 10x
    longer (75 ms vs 8 ms for a batch of 10 MTAT-sized clips on 2 cores).
    """
    return {
        "audio": torch.from_numpy(np.stack([item["audio"].numpy() for item in items])),
        "labels": torch.from_numpy(np.stack([item["labels"].numpy() for item in items])),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
    }


class RandomWindows(Dataset):
    """Training view of a ``ClipDataset``: ``n_windows`` windows at random offsets per clip.

    Items are keyed by ``(index, epoch)`` (see ``EpochShuffleSampler(with_epoch=True)``);
    the offsets are drawn from a generator seeded by (seed, epoch, index), so a resumed
    run sees the windows an uninterrupted one would, whatever the loader workers.
    """

    def __init__(self, clips: ClipDataset, n_windows: int, seed: int) -> None:
        if n_windows < 1:
            raise ConfigError(f"data.train_subclips must be >= 1, not {n_windows}")
        self.clips = clips
        self.n_windows = n_windows
        self.seed = seed

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, epoch = key
        samples = self.clips.clip(index)
        length = self.clips.subclip_len
        rng = np.random.default_rng([self.seed, epoch, index])
        starts = rng.integers(0, len(samples) - length + 1, size=self.n_windows)
        windows = np.stack([samples[start : start + length] for start in starts])
        return self.clips.item(index, windows)


class EpochShuffleSampler(Sampler):
    """A random permutation that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every training epoch, so the order of epoch e
    is the same in an uninterrupted run and in one resumed from a checkpoint. A run
    resumed mid-epoch calls ``resume`` so that epoch goes on from where it stopped. With
    ``with_epoch`` it yields ``(index, epoch)`` keys (for ``RandomWindows``).
    """

    def __init__(self, num_items: int, seed: int, with_epoch: bool = False) -> None:
        self.num_items = num_items
        self.seed = seed
        self.with_epoch = with_epoch
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, position: int) -> None:
        """Start epoch ``epoch`` at item ``position`` of its order (once; other epochs whole)."""
        self._resume_at = (epoch, position)

    def order(self, epoch: int) -> torch.Tensor:
        """The item order of ``epoch``: int64 [num_items], a permutation of 0..num_items-1."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=generator)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        order = self.order(self.epoch).tolist()
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            order = order[self._resume_at[1] :]
            self._resume_at = None
        if self.with_epoch:
            return iter([(index, self.epoch) for index in order])
        return iter(order)


def to_device(clips: ClipDataset, device: torch.device, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """A split's windows and labels, copied to ``device`` once, in their stored dtype.

    Returns audio [clips, n_subclips * subclip_len] (int16 for stores and the built-in
    data: half the memory of float32) and float32 labels [clips, num_tags]. Clips are
    copied ``chunk`` at a time, so host memory stays bounded.
    """
    length = clips.n_subclips * clips.subclip_len
    first = torch.from_numpy(clips.raw(0)[:length])
    audio = torch.empty((len(clips), length), dtype=first.dtype, device=device)
    for start in range(0, len(clips), chunk):
        rows = range(start, min(start + chunk, len(clips)))
        audio[start : rows.stop] = torch.from_numpy(np.stack([clips.raw(i)[:length] for i in rows]))
    labels = torch.as_tensor(np.asarray(clips.labels), dtype=torch.float32, device=device)
    return audio, labels


class DeviceBatches:
    """Batches gathered on the device from a split held there whole (``data.on_device``).

    Each batch is one indexing of the device tensors, in the order of ``sampler`` (the
    permutation a DataLoader over the same sampler would give) or in file order without
    one: no per-clip Python. Lightning calls ``sampler.set_epoch`` on it as it does on a
    DataLoader's. Batches are dicts as from ``collate_clips``, with ``audio`` in the stored
    dtype (the model divides by ``input_scale`` into float32).

    Args:
        audio, labels: from ``to_device``.
        n_subclips, subclip_len: how each clip's samples are cut into windows.
        batch_size: clips per batch.
        sampler: the training order; None for evaluation (file order).
    """

    def __init__(
        self,
        audio: Tensor,
        labels: Tensor,
        n_subclips: int,
        subclip_len: int,
        batch_size: int,
        sampler: EpochShuffleSampler | None = None,
    ) -> None:
        self.audio = audio
        self.labels = labels
        self.windows = (n_subclips, 1, subclip_len)
        self.batch_size = batch_size
        self.sampler = sampler
        self.batch_sampler = None  # read by Lightning next to ``sampler``, as on a DataLoader

    def __len__(self) -> int:
        return -(-len(self.audio) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        device = self.audio.device
        if self.sampler is None:
            order = torch.arange(len(self.audio), device=device)
        else:
            order = torch.as_tensor(list(self.sampler), device=device)
        for index in order.split(self.batch_size):
            yield {
                "audio": self.audio[index].view(len(index), *self.windows),
                "labels": self.labels[index],
                "index": index,
            }
