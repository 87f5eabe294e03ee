"""Epoch metrics equal scikit-learn on the same scores, degenerate tags left out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from tagger.metrics import EpochTagScores, tag_scores


def make_scores(seed: int = 0, n: int = 97, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.3).astype(np.int64)
    targets[:, 2] = 0  # a tag with no positive clip
    targets[:, 4] = 1  # a tag with no negative clip
    scores = rng.random((n, k)) + 0.5 * targets  # informative but imperfect
    return torch.tensor(scores, dtype=torch.float32), torch.tensor(targets)


def test_epoch_metric_equals_sklearn_over_batches() -> None:
    scores, targets = make_scores()
    metric = EpochTagScores(num_tags=6)
    for chunk in range(0, len(scores), 10):  # uneven batches, as a last short batch is
        metric.update(scores[chunk : chunk + 10], targets[chunk : chunk + 10])
    result = metric.compute()

    valid = [0, 1, 3, 5]
    assert result.valid.tolist() == [True, True, False, True, False, True]
    y, s = targets.numpy()[:, valid], scores.numpy()[:, valid]
    assert result.macro_roc_auc == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-6)
    assert result.macro_pr_auc == pytest.approx(
        average_precision_score(y, s, average="macro"), abs=1e-6
    )
    for column, tag in enumerate(valid):
        assert result.roc_auc[tag].item() == pytest.approx(
            roc_auc_score(y[:, column], s[:, column]), abs=1e-6
        )
    assert torch.isnan(result.roc_auc[2]) and torch.isnan(result.pr_auc[4])
    assert result.skipped(list("abcdef")) == ["c", "e"]


def test_metric_ignores_batch_split_and_resets() -> None:
    scores, targets = make_scores(seed=1)
    one_batch = tag_scores(scores, targets)
    metric = EpochTagScores(num_tags=6)
    metric.update(scores[:3], targets[:3])
    metric.reset()
    metric.update(scores, targets)
    assert metric.compute().macro_roc_auc == pytest.approx(one_batch.macro_roc_auc, abs=1e-7)


def test_no_scorable_tag_gives_nan_not_a_crash() -> None:
    result = tag_scores(torch.rand(5, 2), torch.zeros(5, 2))
    assert not result.valid.any() and np.isnan(result.macro_roc_auc)


def test_wrong_label_width_is_a_clear_error() -> None:
    metric = EpochTagScores(num_tags=6)
    with pytest.raises(ValueError, match=r"shape \[batch, 6\]"):
        metric.update(torch.rand(4, 5), torch.ones(4, 5))
