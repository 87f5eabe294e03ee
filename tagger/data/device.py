"""``data.on_device``: a split held on the training device, and batches gathered there."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from tagger.data.clips import ClipDataset, EveryWindow, RandomWindows
from tagger.data.sampler import EpochShuffleSampler
from tagger.data.sources import track_lengths


@dataclass
class DeviceSplit:
    """A split held on the device: one row per clip (its windows back to back, or the
    whole clip), every row in one flat tensor.

    Attributes:
        audio: [samples] in the stored dtype (int16 for stores and the built-in data);
            row i is ``audio[offsets[i]:offsets[i + 1]]``.
        offsets: int64 [clips + 1], on the host.
        labels: float32 [clips, num_tags], on the device.
    """

    audio: Tensor
    offsets: np.ndarray
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def row_length(self) -> int | None:
        """The samples of every row when all rows are as long, else None."""
        lengths = np.unique(np.diff(self.offsets))
        return int(lengths[0]) if len(lengths) == 1 else None


def to_device(view: ClipDataset | EveryWindow, device: torch.device, whole_clips: bool = False,
              chunk: int = 256) -> DeviceSplit:  # fmt: skip
    """A split's windows and labels, copied to ``device`` once, as the loader reads them.

    Each clip's row holds the windows ``view`` cuts it into (a ``ClipDataset``: its
    ``n_subclips`` windows; an ``EveryWindow``: every window), back to back; with
    ``whole_clips`` (for random windows) the whole clip or track. Audio is int16 for stores
    and the built-in data (half the memory of float32), float32 otherwise. Clips of equal
    rows are copied ``chunk`` at a time, others one at a time, so host memory stays bounded.
    """
    clips = view.clips if isinstance(view, EveryWindow) else view
    length = clips.subclip_len
    if whole_clips:
        lengths = track_lengths(clips.source)
        rows = np.full(len(clips), clips.source.shape[1]) if lengths is None else lengths
    else:
        every = isinstance(view, EveryWindow)
        rows = (view.counts if every else np.full(len(clips), clips.n_subclips)) * length
    offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)
    dtype = torch.int16 if clips.source.dtype == np.int16 else torch.float32
    audio = torch.empty(int(offsets[-1]), dtype=dtype, device=device)
    for start in range(0, len(clips), chunk):
        indices = np.arange(start, min(start + chunk, len(clips)))
        equal = len(np.unique(rows[indices])) == 1
        groups = [indices] if equal else np.split(indices, len(indices))  # one at a time
        for group in groups:
            if whole_clips:
                samples = clips.read(group, np.zeros((1, 1), np.int64), int(rows[group[0]]))
            else:
                samples = clips.read(group, view.starts(group), length)
            part = torch.from_numpy(samples.reshape(-1))
            audio[int(offsets[group[0]]) : int(offsets[group[-1] + 1])] = part
    labels = torch.as_tensor(np.asarray(clips.labels), dtype=torch.float32, device=device)
    return DeviceSplit(audio, offsets, labels)


class DeviceBatches:
    """Batches gathered on the device from a split held there whole (``data.on_device``).

    Each batch is one indexing of the device tensors, in the order of ``sampler`` (the
    permutation a DataLoader over the same sampler would give) or in file order without
    one: no per-clip Python. Lightning calls ``sampler.set_epoch`` on it as it does on a
    DataLoader's. Batches are dicts as a ``ClipDataset`` gives them, with ``audio`` in the
    stored dtype (the model divides by ``input_scale`` into float32).

    Under DDP each of ``world_size`` processes takes its shard of that order, the one a
    ``DistributedSampler`` (without shuffling: the order is already shuffled) gives it.

    Args:
        split: from ``to_device`` (whole clips with ``random_windows``). Rows of different
            lengths (every window of tracks) need ``batch_size`` 1.
        subclip_len: samples per window.
        batch_size: clips per batch.
        sampler: the training order; None for evaluation (file order).
        rank, world_size: this process and the number of processes (DDP).
        random_windows: cut each clip's windows where these ``RandomWindows`` put them in
            the sampler's epoch (the same windows as the loader), not consecutively; any
            part past a track's end is zero-filled, as the loader does.
    """

    def __init__(
        self,
        split: DeviceSplit,
        subclip_len: int,
        batch_size: int,
        sampler: EpochShuffleSampler | None = None,
        rank: int = 0,
        world_size: int = 1,
        random_windows: RandomWindows | None = None,
    ) -> None:
        self.split = split
        self.subclip_len = subclip_len
        self.random_windows = random_windows
        self._starts: tuple[int, Tensor] | None = None  # (epoch, window starts on the device)
        row = split.row_length()
        #: [clips, row] when every row is as long (the model's windows), else None
        self.rows = split.audio.view(len(split), row) if row and random_windows is None else None
        if self.rows is None and random_windows is None and batch_size != 1:
            raise ValueError("rows of different lengths (every window of tracks): batch_size 1")
        device = split.audio.device
        self._row_starts = torch.as_tensor(split.offsets[:-1], device=device)
        self._row_lengths = torch.as_tensor(np.diff(split.offsets), device=device)
        self._short = bool((np.diff(split.offsets) < subclip_len).any())  # zero-fill needed
        self.batch_size = batch_size
        self.sampler = sampler
        self.batch_sampler = None  # read by Lightning next to ``sampler``, as on a DataLoader
        self.rank = rank
        self.world_size = world_size

    def shard(self, order: Sized) -> DistributedSampler:
        """The positions in ``order`` that this process takes, as ``DistributedSampler``."""
        return DistributedSampler(order, self.world_size, self.rank, shuffle=False)

    def __len__(self) -> int:
        return -(-len(self.shard(self.split)) // self.batch_size)

    def order(self) -> Tensor:
        """The clips this process takes this epoch, in order: int64 [clips / world_size]."""
        if self.sampler is None:
            order = torch.arange(len(self.split))
        else:  # with_epoch samplers (random windows) yield (index, epoch) keys
            keys = list(self.sampler)
            order = torch.as_tensor([k[0] for k in keys] if self.sampler.with_epoch else keys)
        return order[list(self.shard(order))].to(self.split.audio.device)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for index in self.order().split(self.batch_size):
            labels = self.split.labels[index]
            yield {"audio": self.audio_of(index), "labels": labels, "index": index}

    def audio_of(self, index: Tensor) -> Tensor:
        """The windows of clips ``index`` [B]: [B, windows, 1, subclip_len], one gather."""
        length = self.subclip_len
        if self.random_windows is None:
            if self.rows is not None:
                return self.rows[index].view(len(index), -1, 1, length)
            (clip,) = index.tolist()  # a row of its own length: one clip per batch
            first, end = self.split.offsets[clip : clip + 2].tolist()
            return self.split.audio[first:end].view(1, -1, 1, length)
        epoch = self.sampler.epoch if self.sampler is not None else 0
        if self._starts is None or self._starts[0] != epoch:  # once per epoch, to the device
            starts = torch.as_tensor(self.random_windows.epoch_starts(epoch), device=index.device)
            self._starts = (epoch, starts)
        offsets = torch.arange(length, device=index.device)
        positions = self._starts[1][index][..., None] + offsets  # [B, windows, length]
        flat = self._row_starts[index][:, None, None] + positions
        if not self._short:
            return self.split.audio[flat].unsqueeze(2)
        inside = positions < self._row_lengths[index][:, None, None]  # past a track's end: 0
        samples = self.split.audio[flat.clamp(max=len(self.split.audio) - 1)]
        return torch.where(inside, samples, torch.zeros_like(samples)).unsqueeze(2)
