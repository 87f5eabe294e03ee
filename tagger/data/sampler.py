"""The training order: a shuffle that depends only on (seed, epoch), resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


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
