"""Epoch-level tagging metrics: macro ROC-AUC and PR-AUC over the tags that can be scored.

Scores and targets are accumulated over the whole epoch (and gathered across
processes by torchmetrics) before anything is computed, so the figures equal
scikit-learn's ``roc_auc_score`` / ``average_precision_score`` on the same arrays,
not an average of per-batch scores.

Tags named ``category---tag`` (MTG-Jamendo's ``genre---rock``, ``mood/theme---calm``) also
get macro figures per category (``category_means``), the way MTG-Jamendo results are
reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multilabel_auroc,
    multilabel_average_precision,
)
from torchmetrics.utilities import dim_zero_cat

#: Between a tag's category and its name: ``genre---rock``.
CATEGORY_SEPARATOR = "---"


@dataclass
class TagScores:
    """Per-tag and macro ROC-AUC / PR-AUC for one evaluated set.

    ``valid`` marks tags with at least one positive and one negative example; the
    others have no defined AUC, hold NaN per tag and are left out of the macro means.
    """

    roc_auc: Tensor  # [K], NaN where not valid
    pr_auc: Tensor  # [K], NaN where not valid
    valid: Tensor  # [K] bool

    @property
    def macro_roc_auc(self) -> float:
        return float(self.roc_auc[self.valid].mean()) if self.valid.any() else float("nan")

    @property
    def macro_pr_auc(self) -> float:
        return float(self.pr_auc[self.valid].mean()) if self.valid.any() else float("nan")

    def skipped(self, tag_names: list[str]) -> list[str]:
        """Names of the tags left out of the macro means."""
        return [name for name, ok in zip(tag_names, self.valid.tolist(), strict=True) if not ok]


def tag_scores(scores: Tensor, targets: Tensor) -> TagScores:
    """ROC-AUC and PR-AUC of clip scores [N, K] against 0/1 targets [N, K], per tag."""
    targets = targets.long()
    positives = targets.sum(dim=0)
    valid = (positives > 0) & (positives < targets.shape[0])
    num_tags = targets.shape[1]
    with warnings.catch_warnings():  # degenerate tags warn here; they are masked below
        warnings.simplefilter("ignore", UserWarning)
        roc = multilabel_auroc(scores.float(), targets, num_tags, average=None, thresholds=None)
        pr = multilabel_average_precision(
            scores.float(), targets, num_tags, average=None, thresholds=None
        )
    nan = torch.tensor(float("nan"))
    return TagScores(torch.where(valid, roc, nan), torch.where(valid, pr, nan), valid)


def tag_categories(tag_names: Sequence[str]) -> list[str] | None:
    """The category of each tag (``genre`` for ``genre---rock``), or None unless every tag
    is named ``category---tag``."""
    parts = [name.partition(CATEGORY_SEPARATOR) for name in tag_names]
    if not parts or not all(category and tag for category, _, tag in parts):
        return None
    return [category for category, _, _ in parts]


def category_means(
    tag_names: Sequence[str], roc_auc: Sequence[float], pr_auc: Sequence[float]
) -> dict[str, dict[str, float]] | None:
    """Macro ROC-AUC and PR-AUC per tag category: ``{category: {"auc", "pr_auc"}}`` in order
    of first appearance, each the mean over the category's tags that could be scored (NaN
    per tag: left out; NaN when none could); None when the tags have no categories."""
    categories = tag_categories(tag_names)
    if categories is None:
        return None

    def mean(values: list[float]) -> float:
        scored = [value for value in values if not math.isnan(value)]
        return sum(scored) / len(scored) if scored else float("nan")

    means = {}
    for category in dict.fromkeys(categories):
        members = [i for i, c in enumerate(categories) if c == category]
        means[category] = {
            "auc": mean([float(roc_auc[i]) for i in members]),
            "pr_auc": mean([float(pr_auc[i]) for i in members]),
        }
    return means


def split_summary(
    tag_names: Sequence[str],
    auc: float,
    pr_auc: float,
    per_tag_auc: Sequence[float],
    per_tag_pr_auc: Sequence[float],
    skipped: Sequence[str],
) -> dict[str, Any]:
    """One evaluated set's section of ``metrics.json`` (``val``, ``test``, eval's split): the
    macro figures, the per-tag ones (NaN for the ``skipped`` tags, which have no positive or
    no negative clip) and, for tags named ``category---tag``, ``per_category``
    (``category_means``). Built here only, from epoch scores (``scores_summary``) or from
    what ``TaggingModule`` logged (``logged_summary``)."""
    summary = {
        "auc": auc,
        "pr_auc": pr_auc,
        "per_tag_auc": dict(zip(tag_names, per_tag_auc, strict=True)),
        "per_tag_pr_auc": dict(zip(tag_names, per_tag_pr_auc, strict=True)),
        "skipped_tags": list(skipped),
    }
    per_category = category_means(tag_names, per_tag_auc, per_tag_pr_auc)
    return summary if per_category is None else {**summary, "per_category": per_category}


def scores_summary(scores: TagScores, tag_names: Sequence[str]) -> dict[str, Any]:
    """``split_summary`` of an evaluated set's ``TagScores`` (``eval.py``)."""
    return split_summary(tag_names, scores.macro_roc_auc, scores.macro_pr_auc,
                         scores.roc_auc.tolist(), scores.pr_auc.tolist(),
                         scores.skipped(list(tag_names)))  # fmt: skip


def logged_summary(metrics: Mapping[str, Any], stage: str,
                   tag_names: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """``split_summary`` of the figures ``TaggingModule`` logged for ``stage``
    (``trainer.callback_metrics``, or what ``trainer.test`` returns; ``train.py``):
    ``<stage>/auc``, ``<stage>/pr_auc``, and ``<stage>_tag_auc/<tag>`` and
    ``<stage>_tag_pr_auc/<tag>`` for each tag that could be scored (the others are skipped)."""
    per_tag = {figure: [float(metrics.get(f"{stage}_tag_{figure}/{name}", float("nan")))
                        for name in tag_names]
               for figure in ("auc", "pr_auc")}  # fmt: skip
    skipped = [name for name in tag_names if f"{stage}_tag_auc/{name}" not in metrics]
    return split_summary(tag_names, float(metrics[f"{stage}/auc"]),
                         float(metrics[f"{stage}/pr_auc"]), per_tag["auc"], per_tag["pr_auc"],
                         skipped)  # fmt: skip


class EpochTagScores(Metric):
    """Collects clip scores and targets over an epoch; ``compute()`` returns ``TagScores``."""

    full_state_update = False

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        # persistent: a checkpoint taken mid-epoch holds the epoch's scores so far
        self.add_state("scores", default=[], dist_reduce_fx="cat", persistent=True)
        self.add_state("targets", default=[], dist_reduce_fx="cat", persistent=True)

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """Add a batch: scores [B, K] (probabilities or logits), targets [B, K] in {0, 1}.

        Soft targets (mixup's, ``tagger.augment``) count as their rounding (>= 0.5 is 1).
        """
        if scores.shape != targets.shape or scores.shape[-1] != self.num_tags:
            raise ValueError(
                f"expected scores and targets of shape [batch, {self.num_tags}], "
                f"got {tuple(scores.shape)} and {tuple(targets.shape)}"
            )
        self.scores.append(scores.detach().float())
        self.targets.append((targets.detach() >= 0.5).to(torch.int8))

    def compute(self) -> TagScores:
        return tag_scores(dim_zero_cat(self.scores), dim_zero_cat(self.targets))
