"""The files a run leaves in its directory: ``metrics.json``, ``predictions.csv``, reports.

Both are written to a temporary name and renamed when complete, so a crash never
leaves a half-written file that looks finished; a failed write (disk full, no permission)
removes the temporary and raises ``OutputError`` naming the file.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import ConfigError
from tagger.metrics import TagScores, category_means


class OutputError(ConfigError):
    """An output file that cannot be written (no space, no permission), named with the fix."""

    @classmethod
    def of(cls, path: Path, error: OSError, note: str = "") -> OutputError:
        """The one-line error for ``error`` raised while writing ``path``; ``note`` is added
        after the reason (e.g. what was kept)."""
        note = f" ({note})" if note else ""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free space on that file system or write elsewhere (paths.log_dir=DIR)"
            reason = "no space left on the device"
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {path.parent} writable or write elsewhere (paths.log_dir=DIR)"
            reason = "permission denied"
        else:
            fix = "check that the folder exists and can be written, or write elsewhere"
            reason = error.strerror or str(error)
        return cls(f"cannot write {path}: {reason}{note}; {fix}")


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: a hidden name beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _replace_with(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary beside ``path``, then rename it to ``path``; on any
    failure the temporary is removed and ``path`` is left as it was."""
    tmp = temporary_path(path)
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError.of(path, error) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
    return _replace_with(Path(path), lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(_json_safe(data), indent=2, default=str) + "\n")


def scores_summary(scores: TagScores, tag_names: Sequence[str]) -> dict[str, Any]:
    """Macro and per-tag figures of one evaluated set, for ``metrics.json``; tags named
    ``category---tag`` add macro figures per category (``per_category``)."""
    roc_auc, pr_auc = scores.roc_auc.tolist(), scores.pr_auc.tolist()
    summary = {
        "auc": scores.macro_roc_auc,
        "pr_auc": scores.macro_pr_auc,
        "per_tag_auc": dict(zip(tag_names, roc_auc, strict=True)),
        "per_tag_pr_auc": dict(zip(tag_names, pr_auc, strict=True)),
        "skipped_tags": scores.skipped(list(tag_names)),
    }
    per_category = category_means(tag_names, roc_auc, pr_auc)
    return summary if per_category is None else {**summary, "per_category": per_category}


def write_predictions(
    path: str | Path,
    clip_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    tag_names: Sequence[str],
) -> Path:
    """One row per clip: ``clip_id``, ``true_tags`` (``;``-separated) and a probability per tag."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "true_tags", *tag_names])
            for clip_id, row_labels, row_probs in zip(clip_ids, labels, probs, strict=True):
                true = [t for t, y in zip(tag_names, row_labels, strict=True) if y > 0.5]
                writer.writerow([clip_id, ";".join(true), *(f"{p:.6f}" for p in row_probs)])

    return _replace_with(Path(path), write)
