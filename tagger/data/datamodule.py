"""The LightningDataModule every data source shares: splits of ``ClipDataset``s -> loaders."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from tagger.data.clips import ClipDataset, EpochShuffleSampler, RandomWindows, collate_clips

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


class ClipDataModule(LightningDataModule):
    """Train/val/test splits of tagged clips, each clip seen as sub-clips.

    Batches are dicts: ``audio`` [batch, n_subclips, 1, subclip_len], ``labels``
    [batch, num_tags], ``index`` [batch]. Subclasses provide ``tag_names``,
    ``load_splits`` and ``describe``.

    Args:
        n_subclips: windows per clip.
        subclip_len: samples per window.
        sample_rate: samples per second of the audio, in Hz.
        batch_size: clips per batch.
        num_workers: loader worker processes (0 loads in the main process).
        shuffle_seed: seed of the training order (each epoch's order depends only on it
            and the epoch number), and of the random windows.
        random_windows: training sees ``train_subclips`` windows of ``subclip_len`` at random
            offsets of each clip (Dieleman's random 3 s crops), drawn anew every epoch;
            evaluation always averages the ``n_subclips`` consecutive windows.
        train_subclips: random windows per training clip (default: ``n_subclips``).
    """

    def __init__(
        self,
        n_subclips: int,
        subclip_len: int,
        sample_rate: int,
        batch_size: int,
        num_workers: int = 0,
        shuffle_seed: int = 0,
        random_windows: bool = False,
        train_subclips: int | None = None,
    ) -> None:
        super().__init__()
        self.n_subclips = n_subclips
        self.subclip_len = subclip_len
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_seed = shuffle_seed
        self.random_windows = random_windows
        self.train_subclips = train_subclips or n_subclips
        self.splits: dict[str, ClipDataset] = {}
        self._resume_at: dict[str, int] = {}

    @property
    @abstractmethod
    def tag_names(self) -> list[str]:
        """Tag names, in label-column order."""

    @abstractmethod
    def load_splits(self) -> dict[str, ClipDataset]:
        """Build the datasets: ``train`` and ``val`` at least, ``test`` where the data has one."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What this data is, for ``metrics.json`` (name, source, whether it is real music)."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()

    def split_sizes(self) -> dict[str, int]:
        """Clips per split, e.g. ``{"train_clips": 800, "val_clips": 200, "test_clips": 0}``."""
        self.setup()
        return {f"{name}_clips": len(self.splits.get(name, ())) for name in SPLITS}

    def loader(self, split: str) -> DataLoader:
        """Loader over ``split`` in file order (evaluation)."""
        self.setup()
        if split not in self.splits:
            raise KeyError(f"this data has no {split!r} split; it has {sorted(self.splits)}")
        return self._loader(self.splits[split], sampler=None)

    def _loader(
        self, dataset: ClipDataset | RandomWindows, sampler: EpochShuffleSampler | None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the training epoch and the batches of it already done."""
        if self.trainer is None:
            return {}
        return {
            "epoch": self.trainer.current_epoch,
            "batches": self.trainer.fit_loop.epoch_loop.batch_progress.current.processed,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Called by Lightning on resume, before ``train_dataloader``."""
        self._resume_at = dict(state_dict)

    def _resume(self, sampler: EpochShuffleSampler) -> None:
        """Make a run resumed mid-epoch skip the clips the interrupted run already trained on."""
        if not self._resume_at.get("batches"):
            return
        if self.trainer is not None and self.trainer.world_size > 1:
            log.warning(
                "resumed with %d processes: the epoch's data starts over", self.trainer.world_size
            )
            return
        sampler.resume(self._resume_at["epoch"], self._resume_at["batches"] * self.batch_size)
        self._resume_at = {}

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        sampler = EpochShuffleSampler(len(train), self.shuffle_seed, with_epoch=self.random_windows)
        self._resume(sampler)
        if self.random_windows:
            return self._loader(
                RandomWindows(train, self.train_subclips, self.shuffle_seed), sampler
            )
        return self._loader(train, sampler)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
