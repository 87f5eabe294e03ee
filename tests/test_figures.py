"""The figures eval.py writes: real PNG files, a per-tag CSV that agrees with the metrics."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

import tagger.evaluate
from tagger.evaluate import evaluate
from tagger.figures import (
    filter_peak_frequencies,
    first_conv,
    plot_first_layer_filters,
    plot_roc_pr_curves,
    tag_curves,
)
from tagger.metrics import tag_scores
from tagger.module import load_trained
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_run: dict) -> tuple[dict, dict]:
    """The session's tiny baseline (``tiny_run``), evaluated on validation."""
    root = tmp_path_factory.mktemp("figures")
    cfg = compose_config(
        "eval", root / "eval", [f"ckpt_path={tiny_run['checkpoints']['last']}", "split=val"]
    )
    return tiny_run, evaluate(cfg)  # fmt: skip


def test_eval_writes_the_figures_as_images(evaluated) -> None:
    _, summary = evaluated
    names = {Path(p).name for p in summary["figures"]}
    assert names == {"per_tag_auc.png", "clips.md", "curves.png", "filter_spectra.png",
                     "filters.png", "roc_pr_curves.png"}  # fmt: skip
    for path in summary["figures"]:
        if path.endswith(".png"):
            image = matplotlib.image.imread(path)  # fails unless it is a real PNG
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_per_tag_csv_mean_is_the_reported_macro_auc(evaluated) -> None:
    _, summary = evaluated
    with (Path(summary["predictions"]).parent / "per_tag_auc.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["tag"] for row in rows] == summary["tag_names"]
    scored = [float(row["roc_auc"]) for row in rows if row["roc_auc"]]
    assert len(scored) == len(summary["tag_names"]) - len(summary["val"]["skipped_tags"])
    assert np.mean(scored) == pytest.approx(summary["val"]["auc"], abs=1e-5)


def test_best_and_worst_clips_table(evaluated) -> None:
    _, summary = evaluated
    table = (Path(summary["predictions"]).parent / "clips.md").read_text().splitlines()
    best = [line for line in table if line.startswith("| best |")]
    worst = [line for line in table if line.startswith("| worst |")]
    assert len(best) == len(worst) == 5
    clip_auc = [float(line.split("|")[3]) for line in best + worst]
    assert clip_auc[:5] == sorted(clip_auc[:5], reverse=True)
    assert min(clip_auc[:5]) >= max(clip_auc[5:])


def test_filter_spectra_are_sorted_by_peak_frequency(evaluated, tmp_path) -> None:
    trained, _ = evaluated
    model, _ = load_trained(trained["checkpoints"]["last"])
    conv = first_conv(model.net)
    assert conv is not None and conv.weight.shape == (32, 1, 256)
    peaks = plot_first_layer_filters(conv, 12000, tmp_path / "s.png", tmp_path / "f.png")
    assert np.all(np.diff(peaks) >= 0)  # low to high
    # the same peaks as an independent FFT of each filter, each between 0 and Nyquist
    weights = conv.weight.detach().double().numpy()[:, 0, :]
    independent = [np.argmax(np.abs(np.fft.fft(w))[: 256 // 2 + 1]) * 12000 / 256 for w in weights]
    np.testing.assert_allclose(peaks, np.sort(independent))
    _, computed = filter_peak_frequencies(weights, 12000)
    assert computed.min() >= 0 and computed.max() <= 6000 and not math.isnan(computed.sum())


def legend_values(texts: list[str]) -> dict[str, float]:
    """``{"macro": 0.91, "best: bass": 0.99, ...}`` from legend texts like
    ``"best: bass (ROC-AUC 0.9900)"``."""
    values = {}
    for text in texts:
        match = re.fullmatch(r"(.+) \((?:ROC|PR)-AUC (\d\.\d{4})\)", text)
        assert match, text
        values[match.group(1)] = float(match.group(2))
    return values


def test_roc_pr_curves_are_labelled_with_metrics_json_aucs(
    evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained, _ = evaluated
    drawn: list[dict[str, list[str]]] = []

    def recording(*args, **kwargs) -> dict[str, list[str]]:
        drawn.append(plot_roc_pr_curves(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(tagger.evaluate, "plot_roc_pr_curves", recording)
    cfg = compose_config(
        "eval", tmp_path, [f"ckpt_path={trained['checkpoints']['last']}", "split=val"]
    )
    evaluate(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["val"]
    assert len(drawn) == 1 and (tmp_path / "roc_pr_curves.png").is_file()
    roc, pr = legend_values(drawn[0]["roc"]), legend_values(drawn[0]["pr"])
    assert roc["macro"] == round(metrics["auc"], 4) and pr["macro"] == round(metrics["pr_auc"], 4)
    per_tag = {tag: auc for tag, auc in metrics["per_tag_auc"].items() if auc is not None}
    best, worst = max(per_tag, key=per_tag.get), min(per_tag, key=per_tag.get)
    assert roc[f"best: {best}"] == round(per_tag[best], 4)
    assert roc[f"worst: {worst}"] == round(per_tag[worst], 4)
    assert set(pr) == {"macro", f"best: {best}", f"worst: {worst}"}


def test_macro_curves_are_the_tags_curves_averaged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.3).astype(np.float32)
    labels[:, 3] = 0  # no positive clip: not scorable
    noise = rng.random((200, 4))
    probs = np.stack(
        [labels[:, 0], 0.6 * labels[:, 1] + noise[:, 1], 1 - labels[:, 2], noise[:, 3]], axis=1
    ).astype(np.float32)  # tag 0 perfect, tag 1 informative, tag 2 inverted
    scores = tag_scores(torch.from_numpy(probs), torch.from_numpy(labels))
    x, tpr, precision = tag_curves(labels, probs)
    assert np.isnan(tpr[3]).all() and np.isnan(precision[3]).all()
    # the macro curves' areas are the macro AUCs up to the grid's resolution
    dx = np.diff(x)
    roc_area = np.sum(dx * (tpr[:3, 1:] + tpr[:3, :-1]) / 2, axis=1)
    pr_area = np.sum(dx * precision[:3, 1:], axis=1)  # the step function average precision sums
    np.testing.assert_allclose(roc_area, scores.roc_auc[:3].numpy(), atol=2e-3)
    np.testing.assert_allclose(pr_area, scores.pr_auc[:3].numpy(), atol=1e-2)
    assert np.mean(roc_area) == pytest.approx(scores.macro_roc_auc, abs=2e-3)

    legends = plot_roc_pr_curves(["a", "b", "c", "d"], labels, probs, tmp_path / "c.png")
    assert legend_values(legends["roc"]) == {
        "macro": round(scores.macro_roc_auc, 4), "best: a": 1.0, "worst: c": 0.0,
    }  # fmt: skip
