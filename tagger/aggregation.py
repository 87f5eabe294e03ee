"""From per-sub-clip logits to one score per tag and clip, and the training loss.

Two modes:

* ``mean_logits`` (the replication paper): average the sub-clips' logits, then sigmoid.
* ``mean_probs`` (the coursework's starter code): sigmoid each sub-clip, then average.

Both losses are computed from logits in log space, so they are safe under mixed precision.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Aggregation = Literal["mean_logits", "mean_probs"]
AGGREGATIONS: tuple[str, ...] = ("mean_logits", "mean_probs")


def _mean_probs_log(logits: Tensor) -> tuple[Tensor, Tensor]:
    """log p and log(1 - p) for p = mean over sub-clips of sigmoid(logits).

    logits [B, n, K] -> two tensors [B, K]; exact logsumexp, no log(0).
    """
    log_n = math.log(logits.shape[1])
    log_p = torch.logsumexp(F.logsigmoid(logits), dim=1) - log_n
    log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=1) - log_n
    return log_p, log_not_p


def clip_probabilities(logits: Tensor, mode: Aggregation) -> Tensor:
    """Per-sub-clip logits [B, n, K] -> clip-level tag probabilities [B, K]."""
    if mode == "mean_logits":
        return torch.sigmoid(logits.mean(dim=1))
    if mode == "mean_probs":
        return torch.sigmoid(logits).mean(dim=1)
    raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")


def clip_loss(logits: Tensor, targets: Tensor, mode: Aggregation) -> Tensor:
    """Binary cross-entropy of the aggregated clip scores, averaged over clips and tags.

    Args:
        logits: per-sub-clip logits [B, n, K].
        targets: 0/1 tags [B, K].
        mode: ``mean_logits`` or ``mean_probs``.
    """
    targets = targets.to(logits.dtype)
    if mode == "mean_logits":
        return F.binary_cross_entropy_with_logits(logits.mean(dim=1), targets)
    if mode == "mean_probs":
        log_p, log_not_p = _mean_probs_log(logits)
        return -(targets * log_p + (1 - targets) * log_not_p).mean()
    raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")
