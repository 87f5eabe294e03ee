"""The papers' figures from runs and checkpoints, as PNG files (matplotlib, no display needed).

* ``plot_training_curves``: train/val ROC-AUC and loss per epoch, one line per run
  (the replication paper's Figs 2, 3 and 5).
* ``plot_per_tag_auc``: per-tag ROC-AUC, sorted, with tag names (its Fig. 4).
* ``best_and_worst_clips``: clips with the highest and lowest per-clip ROC-AUC, their
  true tags and top predictions, as a Markdown table (its qualitative results).
* ``plot_first_layer_filters``: a raw-audio model's first-layer filters and their
  magnitude spectra sorted by peak frequency (Dieleman & Schrauwen 2014, Fig. 3).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tagger.metrics import tag_scores


def _save(figure: Figure, path: Path) -> Path:
    """Save as PNG via a temporary name, so a crash never leaves a half-written image.

    The figures are plain ``Figure`` objects, never pyplot's: saving one renders it with
    Agg by itself, so no backend is chosen or switched and no display is needed."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def epoch_curves(csv_file: Path) -> dict[str, dict[int, float]]:
    """Per-epoch series from a run's ``csv/metrics.csv``: metric -> {epoch: value}.

    Step-level metrics (``train/loss``) are averaged over the epoch's steps.
    """
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with csv_file.open() as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            for key in ("train/auc", "val/auc", "train/loss", "val/loss"):
                if row.get(key):
                    sums[key][int(row["epoch"])].append(float(row[key]))
    return {
        key: {e: float(np.mean(v)) for e, v in by_epoch.items()} for key, by_epoch in sums.items()
    }


def plot_training_curves(runs: dict[str, Path], path: Path) -> Path:
    """ROC-AUC and loss per epoch for each run (label -> its ``csv/metrics.csv``)."""
    figure = Figure(figsize=(11, 4))
    auc_axis, loss_axis = figure.subplots(1, 2)
    for label, csv_file in runs.items():
        curves = epoch_curves(csv_file)
        for key, style in (("train", "--"), ("val", "-")):
            for axis, metric in ((auc_axis, "auc"), (loss_axis, "loss")):
                series = curves.get(f"{key}/{metric}", {})
                epochs = sorted(series)
                axis.plot([e + 1 for e in epochs], [series[e] for e in epochs], style,
                          marker="o", label=f"{label} {key}")  # fmt: skip
    for axis, name in ((auc_axis, "macro ROC-AUC"), (loss_axis, "BCE loss")):
        axis.set(xlabel="epoch", ylabel=name)
        axis.grid(alpha=0.3)
    auc_axis.legend(fontsize="small")
    return _save(figure, path)


def plot_per_tag_auc(tag_names: Sequence[str], auc: np.ndarray, png: Path, table: Path) -> Path:
    """Sorted bar chart of per-tag ROC-AUC; also writes ``table`` (CSV: tag, roc_auc).

    Tags without a defined AUC (NaN) are listed in the CSV with an empty value and left
    out of the chart.
    """
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", "roc_auc"])
        for name, value in zip(tag_names, auc, strict=True):
            writer.writerow([name, "" if math.isnan(value) else f"{value:.6f}"])
    scored = sorted(
        ((v, n) for n, v in zip(tag_names, auc, strict=True) if not math.isnan(v)), reverse=True
    )
    figure = Figure(figsize=(max(6, 0.25 * len(scored)), 4))
    axis = figure.subplots()
    axis.bar(range(len(scored)), [v for v, _ in scored], color="tab:blue")
    axis.set_xticks(range(len(scored)), [n for _, n in scored], rotation=90, fontsize="small")
    axis.set(ylabel="ROC-AUC", ylim=(min(0.5, *[v for v, _ in scored]) - 0.02, 1.0))
    axis.axhline(float(np.mean([v for v, _ in scored])), color="k", ls="--", lw=1, label="macro")
    axis.legend()
    return _save(figure, png)


def best_and_worst_clips(
    clip_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    tag_names: Sequence[str],
    count: int = 5,
    top_k: int = 5,
) -> str:
    """Markdown table of the ``count`` best and worst clips by per-clip ROC-AUC.

    Per-clip ROC-AUC ranks one clip's tags by score; clips whose tags are all present or
    all absent have none and are skipped. labels, probs: [clips, tags].
    """
    per_clip = tag_scores(torch.from_numpy(probs.T), torch.from_numpy(labels.T))
    order = [i for i in np.argsort(-per_clip.roc_auc.numpy()) if per_clip.valid[i]]
    lines = [
        "| rank | clip | clip ROC-AUC | true tags | top predictions |",
        "|---|---|---|---|---|",
    ]
    for rank, index in [("best", i) for i in order[:count]] + [
        ("worst", i) for i in order[::-1][:count]
    ]:
        true = ", ".join(t for t, y in zip(tag_names, labels[index], strict=True) if y > 0.5)
        top = np.argsort(-probs[index])[:top_k]
        predicted = ", ".join(f"{tag_names[t]} {probs[index, t]:.2f}" for t in top)
        auc = per_clip.roc_auc[index].item()
        lines.append(f"| {rank} | {clip_ids[index]} | {auc:.3f} | {true} | {predicted} |")
    return "\n".join(lines) + "\n"


def first_conv(net: nn.Module) -> nn.Conv1d | None:
    """The strided convolution applied to raw audio (one input channel), if the net has one."""
    return next((m for m in net.modules() if isinstance(m, nn.Conv1d) and m.in_channels == 1), None)


def filter_peak_frequencies(weights: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectra [filters, bins] of filters [filters, length] and each one's peak (Hz)."""
    spectra = np.abs(np.fft.rfft(weights, axis=1))
    freqs = np.fft.rfftfreq(weights.shape[1], 1 / sample_rate)
    return spectra, freqs[spectra.argmax(axis=1)]


def plot_first_layer_filters(
    conv: nn.Conv1d, sample_rate: int, spectra_png: Path, filters_png: Path
) -> np.ndarray:
    """Plot the filters and their spectra sorted by peak frequency; return the sorted peaks (Hz)."""
    weights = conv.weight.detach().cpu().double().numpy()[:, 0, :]  # [filters, length]
    spectra, peaks = filter_peak_frequencies(weights, sample_rate)
    order = np.argsort(peaks, kind="stable")

    figure = Figure(figsize=(7, 5))
    axis = figure.subplots()
    normalised = spectra[order] / spectra[order].max(axis=1, keepdims=True)
    axis.imshow(normalised.T, origin="lower", aspect="auto", cmap="magma",
                extent=(-0.5, len(order) - 0.5, 0, sample_rate / 2))  # fmt: skip
    axis.set(xlabel="filter (sorted by peak frequency)", ylabel="frequency (Hz)",
             title="first-layer filter magnitude spectra")  # fmt: skip
    _save(figure, spectra_png)

    columns = 8
    rows = math.ceil(len(order) / columns)
    figure = Figure(figsize=(2 * columns, 1.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, index in zip(axes.flat, order, strict=False):
        axis.plot(weights[index], lw=0.8)
        axis.set_title(f"{peaks[index]:.0f} Hz", fontsize="x-small")
    for axis in axes.flat:
        axis.set_axis_off()
    _save(figure, filters_png)
    return peaks[order]


def plot_taggram(
    starts_s: np.ndarray,
    hop_s: float,
    probabilities: np.ndarray,
    tag_names: Sequence[str],
    clip_probabilities: np.ndarray,
    path: Path,
    top_k: int = 10,
    title: str = "",
) -> list[str]:
    """A file's taggram: tag probability [0, 1] per window (columns: windows starting at
    ``starts_s`` [n] seconds, each column ``hop_s`` wide) and tag (rows). Tags run from the
    file's most probable (``clip_probabilities`` [K]) down, with a line under the first
    ``top_k``. ``probabilities``: [n, K]. Returns the tag names from top to bottom."""
    order = np.argsort(-clip_probabilities, kind="stable")
    figure = Figure(figsize=(10, 1.2 + 0.16 * len(order)))
    axis = figure.subplots()
    end_s = starts_s[-1] + hop_s
    image = axis.imshow(probabilities[:, order].T, aspect="auto", interpolation="nearest",
                        cmap="magma", vmin=0, vmax=1,
                        extent=(starts_s[0], end_s, len(order) - 0.5, -0.5))  # fmt: skip
    names = [tag_names[i] for i in order]
    axis.set_yticks(range(len(order)), names, fontsize="x-small")
    if top_k < len(order):
        axis.axhline(top_k - 0.5, color="w", lw=1)
    axis.set(xlabel="window start (s)", title=title)
    figure.colorbar(image, ax=axis, label="tag probability", fraction=0.03, pad=0.01)
    _save(figure, path)
    return names
