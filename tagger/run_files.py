"""The files a run leaves in its directory: ``metrics.json``, ``predictions.csv``, reports.

Both are written to a temporary name and renamed when complete, so a crash never
leaves a half-written file that looks finished.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tagger.metrics import TagScores


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _json_safe(value: Any) -> Any:
    """NaN/inf become null, so the file is valid JSON for every reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    path = Path(path)
    tmp = _atomic_path(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(_json_safe(data), indent=2, default=str) + "\n")


def scores_summary(scores: TagScores, tag_names: Sequence[str]) -> dict[str, Any]:
    """Macro and per-tag figures of one evaluated set, for ``metrics.json``."""
    return {
        "auc": scores.macro_roc_auc,
        "pr_auc": scores.macro_pr_auc,
        "per_tag_auc": dict(zip(tag_names, scores.roc_auc.tolist(), strict=True)),
        "skipped_tags": scores.skipped(list(tag_names)),
    }


def write_predictions(
    path: str | Path,
    clip_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    tag_names: Sequence[str],
) -> Path:
    """One row per clip: ``clip_id``, ``true_tags`` (``;``-separated) and a probability per tag."""
    path = Path(path)
    tmp = _atomic_path(path)
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "true_tags", *tag_names])
        for clip_id, row_labels, row_probs in zip(clip_ids, labels, probs, strict=True):
            true_tags = ";".join(t for t, y in zip(tag_names, row_labels, strict=True) if y > 0.5)
            writer.writerow([clip_id, true_tags, *(f"{p:.6f}" for p in row_probs)])
    tmp.replace(path)
    return path
