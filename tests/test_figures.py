"""The figures eval.py writes: real PNG files, a per-tag CSV that agrees with the metrics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tagger.evaluate import evaluate
from tagger.figures import filter_peak_frequencies, first_conv, plot_first_layer_filters
from tagger.module import load_trained
from tagger.train import train
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[dict, dict]:
    """A baseline trained 3 epochs on the built-in data, then evaluated on validation."""
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("figures")
    trained = train(
        compose_config(
            "train",
            root / "train",
            [*TINY, "trainer.max_epochs=3", "optimizer=adamw", "test=false"],
        )
    )
    cfg = compose_config(
        "eval", root / "eval", [f"ckpt_path={trained['checkpoints']['last']}", "split=val"]
    )
    return trained, evaluate(cfg)  # fmt: skip


def test_eval_writes_the_figures_as_images(evaluated) -> None:
    _, summary = evaluated
    names = {Path(p).name for p in summary["figures"]}
    assert names == {"per_tag_auc.png", "clips.md", "curves.png", "filter_spectra.png",
                     "filters.png"}  # fmt: skip
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
