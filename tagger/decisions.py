"""Decisions: the thresholds that turn tag probabilities into tags, and how good the
decisions are (precision, recall, F1). Numpy only, no model: a checkpoint's tagger, a
bundle's and the evaluation share it.

A clip (or file) is decided to have a tag when its probability is at least the tag's
threshold: ``probability >= threshold`` (``decide``).

The thresholds are fitted on the validation split's clip probabilities and labels
(``fit_thresholds``), by one of two rules (``RULES``, the config key ``decisions.rule``):

- ``per_tag`` (the default): each tag its own F1-best threshold (``f1_best_threshold``).
  A tag with no positive clip in validation has no F1-best threshold (any threshold
  gives F1 0 or an undefined one); it gets the ``shared`` threshold instead, and is
  named in ``Thresholds.no_positive``.
- ``shared``: one threshold for every tag, the one with the best micro F1 over all
  (clip, tag) pairs (the same search over the pairs pooled).

The search (``f1_best_threshold``): the candidates are the distinct scores; the
candidate ``s`` decides positive every clip scoring ``s`` or more. The one with the
highest F1 = 2 TP / (2 TP + FP + FN) is chosen; among candidates of equal F1 the highest
(fewest clips decided positive). The threshold stored is halfway between the chosen
score and the next lower distinct score (the same decisions on validation, a margin on
either side for new clips), rounded to float32 when that keeps it strictly between the
two; the chosen score itself when it is the lowest score or no float32 lies between.
With no positive at all (every tag in ``shared``), the threshold is ``DEFAULT_THRESHOLD``.

The figures (``decision_scores``) follow scikit-learn's ``precision_recall_fscore_support``
with ``zero_division=np.nan``: precision is NaN for a tag never decided, recall NaN for a
tag with no positive clip, F1 NaN for a tag with neither (nothing to score); macro means
leave the NaN tags out (NaN when all are), micro figures pool the counts of every tag.

Stored with a run (``stored_thresholds``, the checkpoint's plain-data key ``thresholds``
and ``metrics.json``'s section of that name): ``{"rule": str, "split": "val", "values":
{tag: float}}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tagger.errors import ConfigError

#: The rules of ``decisions.rule``.
RULES = ("per_tag", "shared")
#: The threshold of a checkpoint that stores none (trained before thresholds were fitted),
#: and of a ``shared`` fit on labels with no positive.
DEFAULT_THRESHOLD = 0.5
#: The key of a checkpoint (and section of ``metrics.json``) that holds the thresholds.
CHECKPOINT_KEY = "thresholds"


@dataclass(frozen=True)
class Thresholds:
    """Fitted thresholds: ``values`` [K] (float64, in tag order), the ``rule`` that chose
    them, and ``no_positive``, the indices of the tags that had no positive clip (they
    hold the shared threshold)."""

    rule: str
    values: np.ndarray
    no_positive: tuple[int, ...] = ()

    def stored(self, tag_names: Sequence[str], split: str = "val") -> dict[str, Any]:
        """The plain data a checkpoint's ``thresholds`` key holds: ``{"rule", "split",
        "values": {tag: float}}``."""
        if len(tag_names) != len(self.values):
            raise ValueError(f"{len(tag_names)} tag names for {len(self.values)} thresholds")
        values = {name: float(v) for name, v in zip(tag_names, self.values, strict=True)}
        return {"rule": self.rule, "split": split, "values": values}


def _checked(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as bool (a label counts when >= 0.5), same shape; a
    NaN or infinite score raises ``ValueError``."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) >= 0.5
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values; thresholds need finite scores")
    return scores, labels


def _between(high: float, low: float) -> float:
    """The threshold stored for the chosen score ``high`` whose next lower score is ``low``:
    their midpoint, as float32 where that stays strictly above ``low`` and at most ``high``."""
    middle = (high + low) / 2
    single = float(np.float32(middle))
    if low < single <= high:
        return single
    return middle if low < middle <= high else high


def f1_best_threshold(scores: Any, labels: Any) -> float | None:
    """The F1-best threshold of one tag's scores [N] against its labels [N] (the module
    docstring gives the rule, ties included); None when ``labels`` has no positive."""
    scores, labels = _checked(scores, labels)
    scores, labels = scores.ravel(), labels.ravel()
    positives = int(labels.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    true_pos = np.cumsum(hits)
    decided = np.arange(1, len(ranked) + 1)
    cut = np.r_[ranked[1:] != ranked[:-1], True]  # after the last clip of each distinct score
    candidates, true_pos, decided = ranked[cut], true_pos[cut], decided[cut]
    # 2 TP / (2 TP + FP + FN) = 2 TP / (decided + positives): exact integers, one division
    f1 = 2 * true_pos / (decided + positives)
    best = int(np.flatnonzero(f1 == f1.max())[0])  # the highest candidate of the best F1
    if best + 1 == len(candidates):
        return float(candidates[best])
    return _between(float(candidates[best]), float(candidates[best + 1]))


def fit_thresholds(scores: Any, labels: Any, rule: str = "per_tag") -> Thresholds:
    """Thresholds for clip scores [N, K] and 0/1 labels [N, K] by ``rule`` (``RULES``)."""
    if rule not in RULES:
        raise ConfigError(f"decisions.rule must be one of {', '.join(RULES)}, not {rule!r}")
    scores, labels = _checked(scores, labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [clips, tags], not of shape {scores.shape}")
    shared = f1_best_threshold(scores, labels)
    shared = DEFAULT_THRESHOLD if shared is None else shared
    num_tags = scores.shape[1]
    if rule == "shared":
        return Thresholds(rule, np.full(num_tags, shared))
    values, no_positive = np.empty(num_tags), []
    for k in range(num_tags):
        best = f1_best_threshold(scores[:, k], labels[:, k])
        if best is None:
            no_positive.append(k)
        values[k] = shared if best is None else best
    return Thresholds(rule, values, tuple(no_positive))


def decide(probabilities: Any, thresholds: Any) -> np.ndarray:
    """Decisions (bool, the shape of ``probabilities`` [..., K]): probability >= the tag's
    threshold (``thresholds`` [K], or one number for every tag); compared in float64."""
    return np.asarray(probabilities, dtype=np.float64) >= np.asarray(thresholds, np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def decision_scores(labels: Any, decided: Any, tag_names: Sequence[str]) -> dict[str, Any]:
    """Precision, recall and F1 of ``decided`` [N, K] against ``labels`` [N, K] (a label
    counts when >= 0.5): ``micro`` and ``macro`` (each ``{"precision", "recall", "f1"}``)
    and ``per_tag`` (``{tag: {"precision", "recall", "f1", "positives", "decided"}}``), NaN
    where undefined (see the module docstring)."""
    truth = np.asarray(labels) >= 0.5
    decided = np.asarray(decided, dtype=bool)
    if truth.shape != decided.shape or truth.ndim != 2 or truth.shape[1] != len(tag_names):
        raise ValueError(f"labels {truth.shape} and decisions {decided.shape} must be "
                         f"[clips, {len(tag_names)}]")  # fmt: skip
    true_pos = (truth & decided).sum(axis=0)
    positives, chosen = truth.sum(axis=0), decided.sum(axis=0)

    def figures(tp: np.ndarray, pos: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
        return {"precision": _ratio(tp, dec), "recall": _ratio(tp, pos),
                "f1": _ratio(2 * tp, pos + dec)}  # fmt: skip

    per_tag = figures(true_pos, positives, chosen)
    micro = figures(true_pos.sum(keepdims=True), positives.sum(keepdims=True),
                    chosen.sum(keepdims=True))  # fmt: skip
    tags = {}
    for k, tag in enumerate(tag_names):
        tags[tag] = {name: float(values[k]) for name, values in per_tag.items()}
        tags[tag].update(positives=int(positives[k]), decided=int(chosen[k]))
    return {
        "micro": {name: float(values[0]) for name, values in micro.items()},
        "macro": {name: _nanmean(values) for name, values in per_tag.items()},
        "per_tag": tags,
    }


def stored_thresholds(stored: Any, tag_names: Sequence[str], source: str) -> dict[str, Any] | None:
    """A checkpoint's ``thresholds`` (None when it has none: an older run), checked:
    ``{"rule": str, "split": str or None, "values": {tag: number from 0 to 1}}`` with exactly the
    checkpoint's tags; returned as plain data of the same shape. Anything else raises
    ``ConfigError`` naming ``source``."""
    if stored is None:
        return None
    where = f"{source}: {CHECKPOINT_KEY}"
    if not isinstance(stored, Mapping):
        raise ConfigError(f"{where} is not a mapping; use a checkpoint written by train.py")
    if not isinstance(stored.get("rule"), str):
        raise ConfigError(f"{where}.rule must be text, not {stored.get('rule')!r}")
    if stored.get("split") is not None and not isinstance(stored["split"], str):
        raise ConfigError(f"{where}.split must be text or null, not {stored['split']!r}")
    values = stored.get("values")
    if not isinstance(values, Mapping) or list(values) != list(tag_names):
        raise ConfigError(f"{where}.values must map each of the checkpoint's "
                          f"{len(tag_names)} tags, in order, to a threshold")  # fmt: skip
    for tag, value in values.items():
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not 0.0 <= value <= 1.0):  # fmt: skip
            raise ConfigError(f"{where}.values[{tag!r}] must be a number from 0 to 1, "
                              f"not {value!r}")  # fmt: skip
    return {"rule": stored["rule"], "split": stored.get("split"),
            "values": {tag: float(value) for tag, value in values.items()}}  # fmt: skip


def threshold_array(stored: Mapping[str, Any], tag_names: Sequence[str]) -> np.ndarray:
    """The values of checked stored thresholds (``stored_thresholds``) as an array [K]."""
    return np.array([stored["values"][tag] for tag in tag_names], dtype=np.float64)


def decided_tags(probabilities: Any, thresholds: Any,
                 tag_names: Sequence[str]) -> list[tuple[str, float]]:  # fmt: skip
    """One file's decided tags (``decide``) with their probabilities, most probable first."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    chosen = np.flatnonzero(decide(probabilities, thresholds))
    order = chosen[np.argsort(-probabilities[chosen], kind="stable")]
    return [(tag_names[i], float(probabilities[i])) for i in order]
