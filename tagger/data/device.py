"""``data.on_device``: a split held on the training device, and batches gathered there."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from tagger.data.clips import ClipDataset, RandomWindows
from tagger.data.sampler import EpochShuffleSampler


def to_device(clips: ClipDataset, device: torch.device, whole_clips: bool = False,
              chunk: int = 256) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A split's windows and labels, copied to ``device`` once, as the loader reads them.

    Returns audio [clips, n_subclips * subclip_len], or [clips, clip samples] with
    ``whole_clips`` (for random windows), int16 for stores and the built-in data (half
    the memory of float32), float32 otherwise; and float32 labels [clips, num_tags].
    Clips are copied ``chunk`` at a time, so host memory stays bounded.
    """
    length = clips.source.shape[1] if whole_clips else clips.n_subclips * clips.subclip_len
    dtype = torch.int16 if clips.source.dtype == np.int16 else torch.float32
    audio = torch.empty((len(clips), length), dtype=dtype, device=device)
    for start in range(0, len(clips), chunk):
        rows = np.arange(start, min(start + chunk, len(clips)))
        samples = clips.read(rows, np.zeros((1, 1), np.int64), length)  # [rows, 1, 1, length]
        audio[start : start + len(rows)] = torch.from_numpy(samples.reshape(len(rows), length))
    labels = torch.as_tensor(np.asarray(clips.labels), dtype=torch.float32, device=device)
    return audio, labels


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

    def shard(self, order: Sized) -> DistributedSampler:
        """The positions in ``order`` that this process takes, as ``DistributedSampler``."""
        return DistributedSampler(order, self.world_size, self.rank, shuffle=False)

    def __len__(self) -> int:
        return -(-len(self.shard(self.audio)) // self.batch_size)

    def order(self) -> Tensor:
        """The clips this process takes this epoch, in order: int64 [clips / world_size]."""
        if self.sampler is None:
            order = torch.arange(len(self.audio))
        else:  # with_epoch samplers (random windows) yield (index, epoch) keys
            keys = list(self.sampler)
            order = torch.as_tensor([k[0] for k in keys] if self.sampler.with_epoch else keys)
        return order[list(self.shard(order))].to(self.audio.device)

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
