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

    A numpy array or memmap is one; so are a store's ``StoreAudio`` and the coursework's
    ``NpyClipFiles``, which read one clip at a time. One that can read several clips
    straight into one array also has ``read_rows(indices, length)`` (see ``read_rows``).
    """

    shape: tuple[int, ...]

    def __getitem__(self, index: int) -> np.ndarray: ...


def read_rows(audio: ClipArray, indices: Sequence[int], length: int) -> np.ndarray:
    """The first ``length`` samples of clips ``indices``: [len(indices), length], stored dtype.

    Copied once where the array allows it: numpy arrays and memmaps by one gather, arrays
    with a ``read_rows`` method (a store's ``StoreAudio``) by that; others clip by clip.
    """
    if isinstance(audio, np.ndarray):
        return audio[np.asarray(indices, dtype=np.int64), :length]
    if hasattr(audio, "read_rows"):
        return audio.read_rows(indices, length)
    return np.stack([np.asarray(audio[index])[:length] for index in indices])


class BadClipError(ConfigError):
    """A clip whose samples cannot be used; the message names the clip."""


class ClipDataset(Dataset):
    """Tagged clips held as one array of clips (in memory, memory-mapped or one file each).

    Item ``i`` is a dict:
        ``audio``  [n_subclips, 1, subclip_len], the first n_subclips * subclip_len samples
                   of clip i in the array's own scale (int16 scale for MTAT): int16 when
                   stored as int16 (half the bytes to copy; the model converts a whole
                   batch at once), else float32;
        ``labels`` float32 [num_tags], 0/1;
        ``index``  int, the row of the clip (for ``clip_ids``).
    A ``DataLoader`` reads whole batches through ``__getitems__`` (one copy per batch).

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

    def checked(self, samples: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        """``samples`` [len(indices), ...] of clips ``indices`` as the model takes them: int16
        as stored, other dtypes as float32; NaN or infinite samples raise ``BadClipError``
        naming the clip."""
        if samples.dtype == np.int16:
            return samples
        finite = np.isfinite(samples.reshape(len(indices), -1)).all(axis=1)
        if not finite.all():
            index = indices[int(np.argmin(finite))]
            raise BadClipError(
                f"clip {self.clip_ids[index]} (row {index}) has NaN or infinite samples"
            )
        return samples.astype(np.float32, copy=False)

    def clip(self, index: int) -> np.ndarray:
        """All samples of clip ``index`` [samples], as ``checked`` gives them."""
        return self.checked(np.asarray(self.audio[index])[None], [index])[0]

    def rows(self, indices: Sequence[int], length: int | None = None) -> np.ndarray:
        """The first ``length`` samples (default: the model's, n_subclips * subclip_len) of
        clips ``indices``: [len(indices), length], read with one copy and ``checked``."""
        length = length or self.n_subclips * self.subclip_len
        return self.checked(read_rows(self.audio, indices, length), indices)

    def batch(self, indices: Sequence[int], samples: np.ndarray) -> dict[str, torch.Tensor]:
        """The batch of clips ``indices`` with windows ``samples`` [B, windows * subclip_len]."""
        return {
            "audio": torch.from_numpy(samples.reshape(len(indices), -1, 1, self.subclip_len)),
            "labels": torch.from_numpy(np.asarray(self.labels[np.asarray(indices)], np.float32)),
            "index": torch.as_tensor(indices, dtype=torch.int64),
        }

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of clips ``indices`` (see ``collate_clips``)."""
        return self.batch(indices, self.rows(indices))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return _only_item(self.__getitems__([index]))


def _only_item(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | int]:
    """The item of a one-clip batch: ``audio`` [windows, 1, T], ``labels`` [K], ``index`` int."""
    index = int(batch["index"][0])
    return {"audio": batch["audio"][0], "labels": batch["labels"][0], "index": index}


def collate_clips(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``DataLoader`` collate of ``ClipDataset``/``RandomWindows``: their ``__getitems__``
    already returns the batch, ``audio`` [B, windows, 1, T], ``labels`` [B, num_tags],
    ``index`` int64 [B], so it is passed on as it is.

    Reading the clips straight into one batch array copies every sample once; item by
    item, then stacked (the default collate), copies it twice, and ``torch.stack`` splits
    the copy over the intra-op threads the training step is using. On 2 CPU cores,
    reading a batch of 10 MTAT-sized clips during training took 83 ms that way (float32
    items) and takes 1.5 ms this way (int16, see benchmarks/README.md).
    """
    return batch


class RandomWindows(Dataset):
    """Training view of a ``ClipDataset``: ``n_windows`` windows at random offsets per clip.

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
            last = self.clips.audio.shape[1] - self.clips.subclip_len
            self._drawn = (epoch, rng.integers(0, last + 1, size=(len(self), self.n_windows)))
        return self._drawn[1]

    def windows(self, index: int, epoch: int) -> np.ndarray:
        """The random windows of clip ``index`` in ``epoch``: [n_windows * subclip_len]."""
        samples = self.clips.clip(index)
        length = self.clips.subclip_len
        starts = self.epoch_starts(epoch)[index]
        return np.concatenate([samples[s : s + length] for s in starts])

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The batch of ``(index, epoch)`` keys (see ``collate_clips``)."""
        indices = [index for index, _ in keys]
        return self.clips.batch(indices, np.stack([self.windows(*key) for key in keys]))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor | int]:
        return _only_item(self.__getitems__([key]))


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


def to_device(clips: ClipDataset, device: torch.device, whole_clips: bool = False,
              chunk: int = 256) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A split's windows and labels, copied to ``device`` once, as the loader reads them.

    Returns audio [clips, n_subclips * subclip_len], or [clips, clip samples] with
    ``whole_clips`` (for random windows), int16 for stores and the built-in data (half
    the memory of float32), float32 otherwise; and float32 labels [clips, num_tags].
    Clips are copied ``chunk`` at a time, so host memory stays bounded.
    """
    length = clips.audio.shape[1] if whole_clips else clips.n_subclips * clips.subclip_len
    first = torch.from_numpy(clips.rows([0], length))
    audio = torch.empty((len(clips), length), dtype=first.dtype, device=device)
    for start in range(0, len(clips), chunk):
        rows = range(start, min(start + chunk, len(clips)))
        audio[start : rows.stop] = torch.from_numpy(clips.rows(rows, length))
    labels = torch.as_tensor(np.asarray(clips.labels), dtype=torch.float32, device=device)
    return audio, labels


class DeviceBatches:
    """Batches gathered on the device from a split held there whole (``data.on_device``).

    Each batch is one indexing of the device tensors, in the order of ``sampler`` (the
    permutation a DataLoader over the same sampler would give) or in file order without
    one: no per-clip Python. Lightning calls ``sampler.set_epoch`` on it as it does on a
    DataLoader's. Batches are dicts as from ``collate_clips``, with ``audio`` in the stored
    dtype (the model divides by ``input_scale`` into float32).

    Under DDP each of ``world_size`` processes takes every ``world_size``-th clip of that
    order from its ``rank`` on, the order first padded with its own first clips to a
    multiple of ``world_size``: the shards ``DistributedSampler`` gives a DataLoader.

    Args:
        audio, labels: from ``to_device`` (whole clips with ``random_windows``).
        n_subclips, subclip_len: how each clip's samples are cut into windows.
        batch_size: clips per batch.
        sampler: the training order; None for evaluation (file order).
        rank, world_size: this process and the number of processes (DDP).
        random_windows: cut each clip's windows where these ``RandomWindows`` put them in
            the sampler's epoch (the same windows as the loader), not consecutively.
    """

    def __init__(
        self,
        audio: Tensor,
        labels: Tensor,
        n_subclips: int,
        subclip_len: int,
        batch_size: int,
        sampler: EpochShuffleSampler | None = None,
        rank: int = 0,
        world_size: int = 1,
        random_windows: RandomWindows | None = None,
    ) -> None:
        self.audio = audio
        self.labels = labels
        self.windows = (n_subclips, 1, subclip_len)
        self.random_windows = random_windows
        self._starts: tuple[int, Tensor] | None = None  # (epoch, window starts on the device)
        self.batch_size = batch_size
        self.sampler = sampler
        self.batch_sampler = None  # read by Lightning next to ``sampler``, as on a DataLoader
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        per_process = -(-len(self.audio) // self.world_size)
        return -(-per_process // self.batch_size)

    def order(self) -> Tensor:
        """The clips this process takes this epoch, in order: int64 [clips / world_size]."""
        device = self.audio.device
        if self.sampler is None:
            order = torch.arange(len(self.audio), device=device)
        else:  # with_epoch samplers (random windows) yield (index, epoch) keys
            keys = list(self.sampler)
            order = torch.as_tensor([k[0] for k in keys] if self.sampler.with_epoch else keys)
            order = order.to(device)
        if self.world_size == 1:
            return order
        padding = -len(order) % self.world_size
        return torch.cat([order, order[:padding]])[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for index in self.order().split(self.batch_size):
            yield {"audio": self.audio_of(index), "labels": self.labels[index], "index": index}

    def audio_of(self, index: Tensor) -> Tensor:
        """The windows of clips ``index`` [B]: [B, windows, 1, subclip_len], one gather."""
        n_windows, _, length = self.windows
        if self.random_windows is None:
            return self.audio[index, : n_windows * length].view(len(index), *self.windows)
        epoch = self.sampler.epoch if self.sampler is not None else 0
        if self._starts is None or self._starts[0] != epoch:  # once per epoch, to the device
            starts = torch.as_tensor(self.random_windows.epoch_starts(epoch), device=index.device)
            self._starts = (epoch, starts)
        offsets = torch.arange(length, device=index.device)
        positions = self._starts[1][index][..., None] + offsets  # [B, windows, length]
        return self.audio[index[:, None, None], positions].unsqueeze(2)
