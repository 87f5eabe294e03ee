"""Read every clip of a data source once and list the ones training could not use.

``tagger check`` runs this before a long training run: a clip that cannot be read, has
the wrong shape, or holds NaN or infinite samples or labels is found in minutes instead
of hours into an epoch. Only the data module's public side is used: its
``load_splits()``, each dataset's ``len``, ``dataset[i]`` (a dict with ``audio`` and ``labels``) and
``clip_ids``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from tagger.data.datamodule import SPLITS, ClipDataModule


@dataclass(frozen=True)
class ClipProblem:
    """A clip training could not use: ``split`` names (e.g. ``val/test`` when two splits
    share one dataset), its ``clip_id``, and the ``reason`` in a few words."""

    split: str
    clip_id: str
    reason: str

    def line(self) -> str:
        """One line naming the split, the clip and the reason."""
        if self.clip_id in self.reason:  # the data module's own error names the clip
            return f"{self.split}: {self.reason}"
        return f"{self.split}: clip {self.clip_id}: {self.reason}"


def distinct_splits(datamodule: ClipDataModule) -> list[tuple[str, Any]]:
    """(split names, dataset) for each distinct dataset of ``datamodule``, in train, val,
    test order; a dataset serving two splits is listed once as ``val/test``.

    The splits come from ``load_splits`` without ``setup``'s quick start-up check of the
    files, which would stop at the first bad header: here every clip is read instead."""
    splits = datamodule.load_splits()
    names: dict[int, list[str]] = {}
    datasets: dict[int, Any] = {}
    for split in SPLITS:
        dataset = splits.get(split)
        if dataset is not None:
            names.setdefault(id(dataset), []).append(split)
            datasets[id(dataset)] = dataset
    return [("/".join(names[key]), datasets[key]) for key in names]


def clip_problem(dataset: Any, index: int, shape: tuple[int, ...], num_tags: int) -> str | None:
    """Why clip ``index`` of ``dataset`` cannot be trained on, or None when it can.

    Args:
        dataset: a split's dataset.
        index: the clip's row.
        shape: the audio shape training expects, [n_subclips, 1, subclip_len].
        num_tags: the labels' length.
    """
    try:
        item = dataset[index]
    except Exception as error:  # BadClipError names the clip; anything else is unreadable too
        return str(error) or type(error).__name__
    audio, labels = torch.as_tensor(item["audio"]), torch.as_tensor(item["labels"])
    if tuple(audio.shape) != shape:
        return f"audio has shape {list(audio.shape)}; expected {list(shape)}"
    if audio.is_floating_point() and not torch.isfinite(audio).all():
        bad = int((~torch.isfinite(audio)).sum())
        return f"{bad} NaN or infinite sample(s)"
    if tuple(labels.shape) != (num_tags,):
        return f"labels have shape {list(labels.shape)}; expected [{num_tags}]"
    if not torch.isfinite(labels).all():
        return "NaN or infinite labels"
    return None


def check_splits(
    splits: Sequence[tuple[str, Any]],
    shape: tuple[int, ...],
    num_tags: int,
    workers: int = 8,
    progress: Callable[[int], object] | None = None,
) -> list[ClipProblem]:
    """Read every clip of ``splits`` (from ``distinct_splits``) once, ``workers`` at a time
    in threads; the problems found, in split and clip order. ``progress(1)`` is called
    after each clip."""
    jobs = [(split, dataset, i) for split, dataset in splits for i in range(len(dataset))]

    def check(job: tuple[str, Any, int]) -> ClipProblem | None:
        split, dataset, index = job
        reason = clip_problem(dataset, index, shape, num_tags)
        if progress is not None:
            progress(1)
        return None if reason is None else ClipProblem(split, dataset.clip_ids[index], reason)

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        return [problem for problem in pool.map(check, jobs) if problem is not None]


def check_data(
    datamodule: ClipDataModule,
    workers: int = 8,
    progress: Callable[[int], object] | None = None,
) -> list[ClipProblem]:
    """Every problem clip of every split of ``datamodule`` (see ``check_splits``)."""
    shape = (datamodule.n_subclips, 1, datamodule.subclip_len)
    splits = distinct_splits(datamodule)
    return check_splits(splits, shape, len(datamodule.tag_names), workers, progress)
