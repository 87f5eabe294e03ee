"""``tagger robustness``: a checkpoint's macro ROC-AUC and PR-AUC under perturbed audio.

The model and its data are rebuilt from the checkpoint as ``eval.py`` does
(``tagger.evaluate.load_for_evaluation``). Each batch of the split is scored once clean and
once per family and strength. A perturbation works on whole clips, on the device: the
clip's windows [n, 1, T] are joined into one row [1, n * T] (int16 scale, as float),
perturbed by ``tagger.perturb``, and cut back into windows of T samples; a time stretch
changes the length, so the row is cut into as many whole windows as fit (at least one,
zero-padded). The clean row is the unperturbed audio, scored like ``eval.py``'s.

Families (the default strengths are ``Family.strengths``):

* ``time_stretch``: phase-vocoder tempo change by a rate (> 1 faster), pitch kept;
* ``pitch_shift``: semitones up or down, duration kept;
* ``gain``: decibels, on the float samples (no clipping);
* ``noise``: additive white Gaussian noise at an SNR in dB relative to each clip's mean
  power, from a generator seeded with ``seed`` for every strength, so results repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from tagger import perturb
from tagger.errors import ConfigError
from tagger.evaluate import load_for_evaluation
from tagger.figures import plot_robustness
from tagger.metrics import TagScores, tag_scores
from tagger.module import TaggingModule
from tagger.run_files import OutputError, write_text
from tagger.settings import Spec

#: A perturbation of rows [B, 1, L] (float, int16 scale) at one strength; the generator
#: (on the rows' device) is used by the families that draw random numbers.
Perturbation = Callable[[Tensor, float, torch.Generator], Tensor]


@dataclass(frozen=True)
class Family:
    """One kind of perturbation: its title, its strength's unit, default strengths, what
    it does, and the strengths it takes (``limits``, checked by ``robustness`` and by
    the command line's flags)."""

    title: str
    unit: str
    strengths: tuple[float, ...]
    apply: Perturbation
    limits: Spec


FAMILIES: dict[str, Family] = {
    "time_stretch": Family("time stretch", "rate", (0.8, 0.9, 1.1, 1.2),
                           lambda x, rate, _: perturb.time_stretch(x, rate),
                           Spec("float", 0.25, 4.0, unit=" (a rate; above 1 is faster)")),
    "pitch_shift": Family("pitch shift", "semitones", (-4.0, -2.0, 2.0, 4.0),
                          lambda x, semitones, _: perturb.pitch_shift(x, semitones),
                          Spec("float", -24.0, 24.0, unit=" (semitones)")),
    "gain": Family("gain", "dB", (-12.0, -6.0, 6.0, 12.0), lambda x, db, _: perturb.gain(x, db),
                   Spec("float", -100.0, 100.0, unit=" (dB)")),
    "noise": Family("white noise", "SNR dB", (30.0, 20.0, 10.0, 0.0),
                    lambda x, snr, generator: perturb.add_noise(x, snr, generator),
                    Spec("float", -30.0, 100.0, unit=" (SNR dB)")),
}  # fmt: skip


def rewindow(rows: Tensor, window: int) -> Tensor:
    """Rows [B, 1, L] cut into consecutive windows [B, n, 1, window], n = max(1, L // window).

    The remainder shorter than a window is dropped; a row shorter than one window is
    zero-padded to one.
    """
    length = rows.shape[-1]
    if length < window:
        rows = torch.nn.functional.pad(rows, (0, window - length))
    n_windows = max(1, length // window)
    return rows[..., : n_windows * window].reshape(rows.shape[0], n_windows, 1, window)


def perturb_clips(
    audio: Tensor, family: Family, strength: float, generator: torch.Generator
) -> Tensor:
    """Clips [B, n, 1, T] (int16 or float, int16 scale) perturbed as whole clips:
    -> float [B, n', 1, T] (n' = n except for a time stretch)."""
    batch, n_windows, _, window = audio.shape
    rows = audio.float().reshape(batch, 1, n_windows * window)  # each clip's windows, joined
    return rewindow(family.apply(rows, strength, generator), window)


@torch.inference_mode()
def split_scores(
    model: TaggingModule,
    batches: Iterable[dict[str, Tensor]],
    device: torch.device,
    change: Callable[[Tensor], Tensor] | None = None,
) -> TagScores:
    """Per-tag scores of ``model`` on ``batches``, each batch's audio moved to ``device`` and,
    when given, passed through ``change`` ([B, n, 1, T] -> [B, n', 1, T]) first."""
    probs, labels = [], []
    for batch in batches:
        audio = batch["audio"].to(device)
        probs.append(model.predict_clips(change(audio) if change else audio).float().cpu())
        labels.append(batch["labels"])
    return tag_scores(torch.cat(probs), torch.cat(labels))


@dataclass
class Robustness:
    """The results: ``table`` has one row per condition (family, strength, unit, roc_auc,
    pr_auc), the clean row (family ``clean``, no strength) first."""

    checkpoint: Path
    split: str
    clips: int
    dataset: dict[str, Any]
    device: str
    seed: int
    table: pd.DataFrame


def robustness(
    ckpt_path: str | Path,
    split: str = "auto",
    strengths: Mapping[str, Sequence[float]] | None = None,
    device: str = "cpu",
    data_overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    trusted_modules: Sequence[str] = (),
) -> Robustness:
    """Score ``ckpt_path`` on its data's ``split`` clean and under each perturbation.

    ``strengths``: family name -> the strengths to run (default: every family of
    ``FAMILIES`` at its default strengths). ``data_overrides`` are merged into the
    checkpoint's data config (e.g. ``{"batch_size": 32}``). Raises ``ConfigError`` for an
    unreadable checkpoint, a split the data lacks, an unknown family or a strength outside
    the family's ``limits``.
    ``trusted_modules``: modules of the user's own whose classes the checkpoint may name
    (``tagger.targets``).
    """
    if strengths is None:
        strengths = {name: family.strengths for name, family in FAMILIES.items()}
    unknown = sorted(set(strengths) - set(FAMILIES))
    if unknown:
        raise ConfigError(f"unknown perturbation families {unknown}; known: {sorted(FAMILIES)}")
    for name, values in strengths.items():
        for value in values:
            FAMILIES[name].limits.check(f"{name} strength", value)
    model, _, datamodule, split = load_for_evaluation(
        ckpt_path, dict(data_overrides or {}), split, trusted_modules
    )
    target = torch.device(device)
    model.to(target)
    loader = datamodule.loader(split)
    conditions = [("clean", None)] + [(f, s) for f, values in strengths.items() for s in values]
    rows = []
    bar = tqdm(conditions, desc="robustness", unit="condition", disable=not progress)
    for name, strength in bar:
        bar.set_postfix_str(name if strength is None else f"{name} {strength:g}")
        if strength is None:
            scores = split_scores(model, loader, target)
            unit = ""
        else:
            family, generator = FAMILIES[name], torch.Generator(target).manual_seed(seed)
            change = partial(perturb_clips, family=family, strength=float(strength),
                             generator=generator)  # fmt: skip
            scores = split_scores(model, loader, target, change)
            unit = family.unit
        rows.append({"family": name, "strength": strength, "unit": unit,
                     "roc_auc": scores.macro_roc_auc, "pr_auc": scores.macro_pr_auc})  # fmt: skip
    return Robustness(
        checkpoint=Path(ckpt_path).resolve(),
        split=split,
        clips=len(datamodule.splits[split]),
        dataset=datamodule.describe(),
        device=device,
        seed=seed,
        table=pd.DataFrame(rows, columns=["family", "strength", "unit", "roc_auc", "pr_auc"]),
    )


def _change(value: float, clean: float) -> str:
    """``value - clean`` with a sign and 4 decimals; a change that rounds to zero is +0.0000."""
    return f"{round(value - clean, 4) + 0.0:+.4f}"


def render_markdown(result: Robustness) -> str:
    """``robustness.md``: the conditions' macro AUCs and their change from clean, clean first."""
    clean = result.table.iloc[0]
    lines = [
        f"# Robustness of {result.checkpoint}",
        "",
        f"Split `{result.split}` ({result.clips} clips) of `{result.dataset.get('name')}`; "
        "macro ROC-AUC and PR-AUC over the tags that can be scored; perturbations on whole "
        f"clips, noise seed {result.seed}, device {result.device}.",
        "",
        "| family | strength | ROC-AUC | change | PR-AUC | change |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.table.itertuples():
        if row.family == "clean":
            lines.append(f"| clean | | {row.roc_auc:.4f} | | {row.pr_auc:.4f} | |")
            continue
        lines.append(
            f"| {FAMILIES[row.family].title} | {row.strength:g} {row.unit} | {row.roc_auc:.4f} "
            f"| {_change(row.roc_auc, clean.roc_auc)} | {row.pr_auc:.4f} "
            f"| {_change(row.pr_auc, clean.pr_auc)} |"
        )
    return "\n".join(lines) + "\n"


def write_robustness(result: Robustness, out_dir: Path) -> list[Path]:
    """Write ``robustness.csv``, ``robustness.md`` and ``robustness.png`` into ``out_dir``
    (each atomically); return their paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError.of(out_dir, error) from None
    titles = {name: (family.title, family.unit) for name, family in FAMILIES.items()}
    return [
        write_text(out_dir / "robustness.csv", result.table.to_csv(index=False)),
        write_text(out_dir / "robustness.md", render_markdown(result)),
        plot_robustness(result.table.to_dict("records"), titles, out_dir / "robustness.png"),
    ]
