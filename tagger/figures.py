"""The papers' figures from runs and checkpoints, as PNG files (matplotlib, no display needed).

* ``plot_training_curves``: train/val ROC-AUC and loss per epoch, one line per run
  (the replication paper's Figs 2, 3 and 5).
* ``plot_per_tag_auc``: per-tag ROC-AUC, sorted, with tag names (its Fig. 4).
* ``best_and_worst_clips``: clips with the highest and lowest per-clip ROC-AUC, their
  true tags and top predictions, as a Markdown table (its qualitative results).
* ``plot_first_layer_filters``: a raw-audio model's first-layer filters and their
  magnitude spectra sorted by peak frequency (Dieleman & Schrauwen 2014, Fig. 3).
* ``plot_roc_pr_curves``: a split's macro ROC and precision-recall curves, with those of
  its best and worst tag, labelled with their AUCs.
* ``plot_robustness``: macro AUCs against the strength of each perturbation family
  (``tagger robustness``).
* ``plot_taggram``: one file's tag probabilities over time (``tagger predict --taggram``).

``per_tag_auc_figure`` and ``taggram_figure`` return the last two as ``Figure`` objects and
``png_bytes`` draws one, for TensorBoard (``tagger.dashboards``).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tagger.metrics import tag_scores
from tagger.run_files import atomic_write, write_text


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn as ``_save`` draws its files (for TensorBoard's
    images: ``tagger.dashboards``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def _save(figure: Figure, path: Path) -> Path:
    """Save as PNG through tagger's one writer (``tagger.run_files.atomic_write``): a crash
    never leaves a half-written image, a failed write raises ``OutputError`` naming it.

    The figures are plain ``Figure`` objects, never pyplot's: saving one renders it with
    Agg by itself, so no backend is chosen or switched and no display is needed."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120,
                                                         bbox_inches="tight"))  # fmt: skip


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
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["tag", "roc_auc"])
    for name, value in zip(tag_names, auc, strict=True):
        writer.writerow([name, "" if math.isnan(value) else f"{value:.6f}"])
    write_text(table, rows.getvalue())
    return _save(per_tag_auc_figure(tag_names, auc), png)


def per_tag_auc_figure(tag_names: Sequence[str], auc: Sequence[float]) -> Figure:
    """``plot_per_tag_auc``'s chart as a ``Figure``: the tags' ROC-AUC, sorted, tags without
    one (NaN) left out."""
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
    return figure


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


#: Points of the common grid on which the tags' ROC and PR curves are averaged.
CURVE_GRID = 501


def tag_curves(
    labels: np.ndarray, probs: np.ndarray, grid: int = CURVE_GRID
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every scorable tag's ROC and PR curve, sampled on one grid of ``grid`` points in [0, 1].

    labels, probs: [clips, tags]. Returns the grid and, per tag, the true-positive rate at
    each false-positive rate and the precision at each recall ([tags, grid], NaN rows for
    tags without a positive or a negative clip). The ROC curve is linear between its points
    (the trapezoids of its AUC); precision is the step function that average precision sums
    (at recall r, the precision of the first threshold whose recall reaches r). Their means
    over tags are the macro curves, whose areas are the macro ROC-AUC and PR-AUC up to the
    grid's resolution.
    """
    # local import: torchmetrics' curve functions are only needed here
    from torchmetrics.functional.classification import (
        multilabel_precision_recall_curve,
        multilabel_roc,
    )

    scores, targets = torch.from_numpy(probs).float(), torch.from_numpy(labels).long()
    num_tags = targets.shape[1]
    valid = tag_scores(scores, targets).valid.numpy()
    with warnings.catch_warnings():  # degenerate tags warn here; they are left out below
        warnings.simplefilter("ignore", UserWarning)
        fprs, tprs, _ = multilabel_roc(scores, targets, num_tags, thresholds=None)
        precisions, recalls, _ = multilabel_precision_recall_curve(
            scores, targets, num_tags, thresholds=None
        )
    x = np.linspace(0.0, 1.0, grid)
    tpr = np.full((num_tags, grid), np.nan)
    precision = np.full((num_tags, grid), np.nan)
    for tag in np.flatnonzero(valid):
        tpr[tag] = np.interp(x, fprs[tag].double().numpy(), tprs[tag].double().numpy())
        # recall descends along the thresholds; take each recall's first (highest) threshold
        recall_levels, first = np.unique(recalls[tag].double().numpy()[::-1], return_index=True)
        at_level = precisions[tag].double().numpy()[::-1][first]
        precision[tag] = at_level[np.searchsorted(recall_levels, x, side="left")]
    return x, tpr, precision


def plot_roc_pr_curves(
    tag_names: Sequence[str], labels: np.ndarray, probs: np.ndarray, path: Path
) -> dict[str, list[str]]:
    """ROC and PR curves of a split: the macro curves and those of the best and worst tag.

    labels, probs: [clips, tags]. The macro curves are ``tag_curves`` averaged over the
    scorable tags; their legend gives the macro ROC-AUC and PR-AUC of ``metrics.json`` (the
    mean of the per-tag AUCs). The best and worst tags are those of highest and lowest
    ROC-AUC, labelled with their own AUCs. Returns the legend texts as drawn:
    ``{"roc": [...], "pr": [...]}`` (empty lists when no tag can be scored).
    """
    scores = tag_scores(torch.from_numpy(probs).float(), torch.from_numpy(labels).long())
    x, tpr, precision = tag_curves(labels, probs)
    figure = Figure(figsize=(11, 4.5))
    roc_axis, pr_axis = figure.subplots(1, 2)
    roc_axis.plot([0, 1], [0, 1], color="0.7", ls=":", lw=1)
    roc_axis.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    pr_axis.set(xlabel="recall", ylabel="precision", title="precision-recall")
    legends: dict[str, list[str]] = {"roc": [], "pr": []}
    if scores.valid.any():
        valid = scores.valid.numpy()
        roc_auc, pr_auc = scores.roc_auc.numpy(), scores.pr_auc.numpy()
        ranked = np.flatnonzero(valid)[np.argsort(-roc_auc[valid], kind="stable")]
        roc_axis.plot(x, tpr[valid].mean(axis=0), color="k", lw=2,
                      label=f"macro (ROC-AUC {scores.macro_roc_auc:.4f})")  # fmt: skip
        pr_axis.plot(x, precision[valid].mean(axis=0), color="k", lw=2, drawstyle="steps-pre",
                     label=f"macro (PR-AUC {scores.macro_pr_auc:.4f})")  # fmt: skip
        for rank, tag, color in (("best", ranked[0], "tab:green"),
                                 ("worst", ranked[-1], "tab:red")):  # fmt: skip
            name = tag_names[tag]
            roc_axis.plot(x, tpr[tag], color=color,
                          label=f"{rank}: {name} (ROC-AUC {roc_auc[tag]:.4f})")  # fmt: skip
            pr_axis.plot(x, precision[tag], color=color, drawstyle="steps-pre",
                         label=f"{rank}: {name} (PR-AUC {pr_auc[tag]:.4f})")  # fmt: skip
        for key, axis in (("roc", roc_axis), ("pr", pr_axis)):
            legend = axis.legend(fontsize="small", loc="lower right" if key == "roc" else "best")
            legends[key] = [text.get_text() for text in legend.get_texts()]
    else:
        roc_axis.text(0.5, 0.5, "no tag has both a positive and a negative clip", ha="center")
    for axis in (roc_axis, pr_axis):
        axis.set(xlim=(0, 1), ylim=(0, 1.02))
        axis.grid(alpha=0.3)
    _save(figure, path)
    return legends


def plot_robustness(
    rows: Sequence[Mapping[str, Any]], titles: Mapping[str, tuple[str, str]], path: Path
) -> Path:
    """One panel per perturbation family: macro ROC-AUC and PR-AUC against its strength.

    rows: ``{"family", "strength", "roc_auc", "pr_auc"}`` per condition; the ``clean`` row
    is drawn in every panel as a dotted line. titles: family -> (title, unit of strength).
    """
    clean = next(row for row in rows if row["family"] == "clean")
    families = list(dict.fromkeys(row["family"] for row in rows if row["family"] != "clean"))
    figure = Figure(figsize=(3.6 * max(1, len(families)), 3.6), layout="constrained")
    axes = figure.subplots(1, max(1, len(families)), squeeze=False, sharey=True)[0]
    for axis, family in zip(axes, families, strict=False):
        points = sorted((row["strength"], row["roc_auc"], row["pr_auc"])
                        for row in rows if row["family"] == family)  # fmt: skip
        strengths = [p[0] for p in points]
        for column, key, name, color in ((1, "roc_auc", "ROC-AUC", "tab:blue"),
                                         (2, "pr_auc", "PR-AUC", "tab:orange")):  # fmt: skip
            axis.plot(strengths, [p[column] for p in points], marker="o", color=color, label=name)
            axis.axhline(clean[key], color=color, ls=":", lw=1, label=f"{name} clean")
        title, unit = titles[family]
        axis.set(title=title, xlabel=unit)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("macro AUC")
    axes[0].legend(fontsize="small")
    return _save(figure, path)


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
    figure, names = taggram_figure(starts_s, hop_s, probabilities, tag_names,
                                   clip_probabilities, top_k, title)  # fmt: skip
    _save(figure, path)
    return names


def taggram_figure(
    starts_s: np.ndarray,
    hop_s: float,
    probabilities: np.ndarray,
    tag_names: Sequence[str],
    clip_probabilities: np.ndarray,
    top_k: int = 10,
    title: str = "",
) -> tuple[Figure, list[str]]:
    """``plot_taggram``'s picture as a ``Figure``, with the tag names from top to bottom."""
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
    return figure, names
