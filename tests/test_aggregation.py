"""Clip-level aggregation and its loss, in both modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tagger.aggregation import clip_loss, clip_probabilities


@pytest.fixture
def logits_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 10, 5, generator=generator) * 2  # [B, n_subclips, K]
    targets = (torch.rand(4, 5, generator=generator) > 0.5).float()
    return logits, targets


def test_mean_logits_averages_before_the_sigmoid(logits_and_targets) -> None:
    logits, targets = logits_and_targets
    expected_probs = torch.sigmoid(logits.mean(dim=1))
    torch.testing.assert_close(clip_probabilities(logits, "mean_logits"), expected_probs)
    expected_loss = F.binary_cross_entropy(expected_probs, targets)
    torch.testing.assert_close(clip_loss(logits, targets, "mean_logits"), expected_loss)


def test_mean_probs_averages_after_the_sigmoid(logits_and_targets) -> None:
    logits, targets = logits_and_targets
    expected_probs = torch.sigmoid(logits).mean(dim=1)
    torch.testing.assert_close(clip_probabilities(logits, "mean_probs"), expected_probs)
    expected_loss = F.binary_cross_entropy(expected_probs.double(), targets.double()).float()
    torch.testing.assert_close(clip_loss(logits, targets, "mean_probs"), expected_loss)


def test_mean_probs_loss_is_finite_where_the_naive_form_is_not() -> None:
    logits = torch.full((1, 3, 2), 60.0, requires_grad=True)  # sigmoid rounds to exactly 1
    targets = torch.tensor([[0.0, 1.0]])
    assert torch.isinf(-torch.log1p(-torch.sigmoid(logits).mean(dim=1)[0, 0]))
    loss = clip_loss(logits, targets, "mean_probs")
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(60 / 2, rel=1e-3)
    assert torch.isfinite(logits.grad).all()


def test_unknown_mode_is_refused(logits_and_targets) -> None:
    logits, targets = logits_and_targets
    with pytest.raises(ValueError, match="mean_logits"):
        clip_loss(logits, targets, "max")  # type: ignore[arg-type]
