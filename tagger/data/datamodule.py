"""The LightningDataModule every data source shares: splits of ``ClipDataset``s -> loaders."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, default_convert

from tagger.data.clips import ClipDataset, EveryWindow, RandomWindows
from tagger.data.device import DeviceBatches, DeviceSplit, to_device
from tagger.data.sampler import EpochShuffleSampler
from tagger.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: ``data.eval_windows``: the windows validation and test average over.
EVAL_WINDOWS: tuple[str, ...] = ("spread", "all")


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
            offsets of each clip or track (Dieleman's random 3 s crops), drawn anew every
            epoch; otherwise it sees the windows evaluation averages.
        train_subclips: random windows per training clip (default: ``n_subclips``).
        eval_windows: ``spread``: validation and test average over ``n_subclips`` windows,
            consecutive from sample 0 for clips of one length, spread evenly over the whole
            track for tracks (a v2 store); ``all``: over every whole window, consecutive from
            sample 0 (tracks then have different numbers of windows, so they are evaluated
            one track per batch).
        on_device: copy each split whole onto the training device (int16 for stores: MTAT
            at 12 kHz is about 12 GB) and form batches there, with no per-clip work on the
            host; the same batches in the same order as the loader otherwise gives (under
            DDP every process holds the split and takes its shard of each epoch's order;
            with ``random_windows`` the training clips are held whole).
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
        on_device: bool = False,
        eval_windows: str = "spread",
    ) -> None:
        super().__init__()
        if eval_windows not in EVAL_WINDOWS:
            raise ConfigError(
                f"data.eval_windows={eval_windows}; choose one of: {', '.join(EVAL_WINDOWS)}"
            )
        self.eval_windows = eval_windows
        self.n_subclips = n_subclips
        self.subclip_len = subclip_len
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_seed = shuffle_seed
        self.random_windows = random_windows
        self.train_subclips = train_subclips or n_subclips
        self.on_device = on_device
        # (split, rows: windows / every / whole) -> the split on the device
        self._device_splits: dict[tuple[str, str], DeviceSplit] = {}
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

    def left_out(self) -> list[str]:
        """Inputs this data leaves out, one line each naming it and why (e.g. the files
        ``tagger prepare`` skipped); none by default."""
        return []

    def check_files(self, splits: dict[str, ClipDataset]) -> None:
        """A quick start-up look at the files behind ``splits`` (headers and sizes, not the
        samples), run by ``setup``; raises ``BadClipError`` naming every bad file. Sources
        held in memory or already checked when written (the store) have nothing to do."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            splits = self.load_splits()
            self.check_files(splits)
            self.splits = splits
            self._note_short_tracks()

    def _note_short_tracks(self) -> None:
        """Log once per split how many tracks are shorter than one window (zero-filled)."""
        seen: set[int] = set()
        for name in SPLITS:
            dataset = self.splits.get(name)
            if dataset is None or id(dataset) in seen:
                continue
            seen.add(id(dataset))
            short = dataset.short_tracks()
            if short:
                log.warning(
                    "%d of %d %s tracks are shorter than one window (data.subclip_len=%d); "
                    "their windows are zero-filled past the track's end",
                    short, len(dataset), name, self.subclip_len,
                )  # fmt: skip

    def split_sizes(self) -> dict[str, int]:
        """Clips per split, e.g. ``{"train_clips": 800, "val_clips": 200, "test_clips": 0}``."""
        self.setup()
        return {f"{name}_clips": len(self.splits.get(name, ())) for name in SPLITS}

    def loader(self, split: str) -> DataLoader | DeviceBatches:
        """Loader over ``split`` in file order (evaluation)."""
        self.setup()
        if split not in self.splits:
            raise KeyError(f"this data has no {split!r} split; it has {sorted(self.splits)}")
        clips = self.splits[split]
        if self.eval_windows == "spread":
            return self._loader(clips, sampler=None, split=split)
        # every window: tracks differ in their numbers of windows, so one track per batch
        batch_size = self.batch_size if clips.lengths is None else 1
        return self._loader(EveryWindow(clips), sampler=None, split=split, batch_size=batch_size)

    def _device_batches(
        self,
        split: str,
        sampler: EpochShuffleSampler | None,
        dataset: ClipDataset | RandomWindows | EveryWindow,
        batch_size: int,
    ) -> DeviceBatches:
        """``data.on_device``: the split copied to the training device once, then batches
        (whole clips for random windows, else the windows ``dataset`` cuts)."""
        trainer = self.trainer
        random = dataset if isinstance(dataset, RandomWindows) else None
        rows = "whole" if random else "every" if isinstance(dataset, EveryWindow) else "windows"
        key = (split, rows)
        if key not in self._device_splits:
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            view = random.clips if random else dataset
            self._device_splits[key] = to_device(view, device, whole_clips=rows == "whole")
        shard = (
            {"rank": trainer.global_rank, "world_size": trainer.world_size}
            if trainer is not None
            else {}
        )
        return DeviceBatches(
            self._device_splits[key],
            self.subclip_len,
            batch_size,
            sampler,
            random_windows=random,
            **shard,
        )

    def _loader(
        self,
        dataset: ClipDataset | RandomWindows | EveryWindow,
        sampler: EpochShuffleSampler | None,
        split: str,
        batch_size: int | None = None,
    ) -> DataLoader | DeviceBatches:
        batch_size = batch_size or self.batch_size
        if self.on_device:
            return self._device_batches(split, sampler, dataset, batch_size)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=default_convert,  # the datasets' ``__getitems__`` read whole batches
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

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        train = self.splits["train"]
        sampler = EpochShuffleSampler(len(train), self.shuffle_seed, with_epoch=self.random_windows)
        self._resume(sampler)
        if self.random_windows:
            windows = RandomWindows(train, self.train_subclips, self.shuffle_seed)
            return self._loader(windows, sampler, "train")
        return self._loader(train, sampler, "train")

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self.loader("test")
