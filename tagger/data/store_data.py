"""Training from a prepared clip store (``data=store data.path=STORE``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tagger.data.clips import ClipDataset
from tagger.data.datamodule import ClipDataModule
from tagger.data.splits import carve_validation
from tagger.data.store import TRACKS_FORMAT_VERSION, ClipStore
from tagger.errors import ConfigError

log = logging.getLogger(__name__)


class StoreDataModule(ClipDataModule):
    """The clips of a store, in the splits recorded in it.

    A store without validation clips (MTAT's ``coursework`` rule) gets them carved out of
    its training clips by part (``val_parts``: the first folder of each clip's path) or by
    a seeded fraction (``val_fraction``); with neither it validates on the test split.

    Args:
        path: the store directory (written by ``tagger prepare``).
        val_parts: parts of the training clips used for validation (e.g. ``["c"]``).
        val_fraction: or a seeded fraction of the training clips used for validation.
        split_seed: seed of ``val_fraction``.
        **loader_args: see ``ClipDataModule``; ``sample_rate`` must be the store's.
    """

    def __init__(
        self,
        path: str | None = None,
        val_parts: list[str] | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        **loader_args: Any,
    ) -> None:
        super().__init__(**loader_args)
        if not path:
            raise ConfigError("data=store needs data.path=STORE, a store from `tagger prepare`")
        self.store = ClipStore(Path(path).expanduser())
        if self.sample_rate != self.store.sample_rate:
            raise ConfigError(
                f"data.sample_rate={self.sample_rate}, but the store {path} holds "
                f"{self.store.sample_rate} Hz audio; leave data.sample_rate at its default"
            )
        self.val_parts = list(val_parts) if val_parts else None
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.validation = "the store's val split"

    @property
    def tag_names(self) -> list[str]:
        return self.store.tag_names

    def _dataset(self, rows: np.ndarray) -> ClipDataset:
        store = self.store
        return ClipDataset(
            store.audio.subset(rows),
            store.labels[rows],
            [store.clip_ids[row] for row in rows],
            self.n_subclips,
            self.subclip_len,
        )

    def load_splits(self) -> dict[str, ClipDataset]:
        splits = self.store.splits
        train, val, test = (np.flatnonzero(splits == name) for name in ("train", "val", "test"))
        carving = bool(self.val_parts or self.val_fraction)
        if carving and len(val):
            raise ConfigError(
                f"the store {self.store.path} has its own val split ({len(val)} clips); "
                "data.val_parts and data.val_fraction are for stores without one"
            )
        if carving:
            parts = [self.store.source_paths[row].split("/", 1)[0] for row in train]
            is_val = carve_validation(parts, self.val_parts, self.val_fraction, self.split_seed)
            train, val = train[~is_val], train[is_val]
            self.validation = (
                f"parts {', '.join(self.val_parts)} of the training clips"
                if self.val_parts
                else f"a seeded fraction {self.val_fraction} of the training clips"
            )
        if not len(train):
            raise ConfigError(f"the store {self.store.path} has no training clips")
        datasets = {"train": self._dataset(train)}
        if len(test):
            datasets["test"] = self._dataset(test)
        if len(val):
            datasets["val"] = self._dataset(val)
        elif len(test):
            log.warning("the store has no val split: validating on its test split")
            self.validation = "the test split (the store has no val split)"
            datasets["val"] = datasets["test"]
        else:
            raise ConfigError(
                f"the store {self.store.path} has neither val nor test clips; set "
                "data.val_fraction=0.1 to validate on part of the training clips"
            )
        return datasets

    def left_out(self) -> list[str]:
        """The files ``tagger prepare`` skipped for this store (``meta.json``'s ``skipped``)."""
        return [
            f"{skip.get('path')}: skipped when prepared: {skip.get('reason')}"
            for skip in self.store.meta.get("skipped") or []
            if isinstance(skip, dict)
        ]

    def describe(self) -> dict[str, Any]:
        meta = self.store.meta
        return {
            "name": f"store:{meta['source']}",
            "real_music": True if meta["source"] == "mtat" else None,  # None: not known
            "path": str(self.store.path.resolve()),
            **{key: meta[key] for key in ("source", "tag_set", "split_rule", "sample_rate")},
            "split": meta["split_rule"].partition(":")[0],  # clean:DIR -> clean
            "clip_samples": self.store.clip_samples,
            "validation": self.validation,
            "skipped_files": len(meta["skipped"]),
            **(  # a store of tracks of any length (format version 2)
                {"track_samples": meta["track_samples"], "padded_tracks": meta["padded"]["count"]}
                if self.store.version == TRACKS_FORMAT_VERSION
                else {}
            ),
        }

