"""Clips as arrays, cut into sub-clips for the model, and an epoch-seeded shuffle."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tagger.config import ConfigError


class ClipDataset(Dataset):
    """Tagged clips held as one array (in memory or memory-mapped).

    Item ``i`` is a dict:
        ``audio``  float32 [n_subclips, 1, subclip_len], the first n_subclips * subclip_len
                   samples of clip i, in the array's own scale (int16 scale for MTAT);
        ``labels`` float32 [num_tags], 0/1;
        ``index``  int, the row of the clip (for ``clip_ids``).

    Args:
        audio: [clips, samples], any real dtype.
        labels: [clips, num_tags], 0/1.
        clip_ids: one identifier per clip.
        n_subclips: consecutive windows per clip.
        subclip_len: samples per window.
    """

    def __init__(
        self,
        audio: np.ndarray,
        labels: np.ndarray,
        clip_ids: Sequence[str],
        n_subclips: int,
        subclip_len: int,
    ) -> None:
        if audio.ndim != 2 or labels.ndim != 2 or len(audio) != len(labels) != len(clip_ids):
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
        return len(self.audio)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        samples = np.asarray(self.audio[index, : self.n_subclips * self.subclip_len], np.float32)
        return {
            "audio": torch.from_numpy(samples).view(self.n_subclips, 1, self.subclip_len),
            "labels": torch.from_numpy(np.asarray(self.labels[index], np.float32)),
            "index": index,
        }


class EpochShuffleSampler(Sampler[int]):
    """A random permutation that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every training epoch, so the order of epoch e
    is the same in an uninterrupted run and in one resumed from a checkpoint.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())
