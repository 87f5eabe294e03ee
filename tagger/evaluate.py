"""The evaluation workflow: ``evaluate(cfg)`` scores a checkpoint on its own data.

The model and the data are rebuilt from the checkpoint alone (its hyperparameters and
the run config that training stored in it). Writes ``metrics.json`` and
``predictions.csv`` into the eval run's directory, with the figures of
``tagger.figures``: ``per_tag_auc.png``/``.csv``, ``roc_pr_curves.png``, ``clips.md``,
``curves.png`` and, for raw-audio models, ``filter_spectra.png`` and ``filters.png``.

Decisions (``tagger.decisions``): the checkpoint's thresholds are fitted afresh on its
validation split (``decisions.rule``), and the evaluated split's precision, recall and F1
at them are reported (``decisions_summary``); training does the same for its best
checkpoint (``fit_decisions``, ``split_predictions``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tagger.data.datamodule import ClipDataModule
from tagger.decisions import (
    DEFAULT_THRESHOLD,
    Thresholds,
    decide,
    decision_scores,
    fit_thresholds,
    threshold_array,
)
from tagger.errors import ConfigError
from tagger.figures import (
    best_and_worst_clips,
    first_conv,
    plot_first_layer_filters,
    plot_per_tag_auc,
    plot_roc_pr_curves,
    plot_training_curves,
)
from tagger.metrics import TagScores, scores_summary, tag_scores
from tagger.module import TaggingModule, load_trained
from tagger.run_files import write_json, write_predictions, write_text
from tagger.settings import check_settings
from tagger.targets import check_built_node, module_names


def write_figures(
    run_dir: Path,
    ckpt_path: Path,
    model: TaggingModule,
    sample_rate: int,
    scores: TagScores,
    clip_ids: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
) -> list[Path]:
    """The papers' figures for an evaluated checkpoint, written into ``run_dir``.

    Training curves come from the training run's CSV log beside the checkpoint's folder;
    the filter figures only for networks with a raw-audio first layer.
    """
    written = [
        plot_per_tag_auc(model.tag_names, scores.roc_auc.numpy(), run_dir / "per_tag_auc.png",
                         run_dir / "per_tag_auc.csv"),
        write_text(run_dir / "clips.md",
                   best_and_worst_clips(clip_ids, labels, probs, model.tag_names)),
    ]  # fmt: skip
    roc_pr = run_dir / "roc_pr_curves.png"
    plot_roc_pr_curves(model.tag_names, labels, probs, roc_pr)
    written.append(roc_pr)
    training_log = ckpt_path.resolve().parent.parent / "csv" / "metrics.csv"
    if training_log.is_file():
        written.append(plot_training_curves({"run": training_log}, run_dir / "curves.png"))
    conv = first_conv(model.net)
    if conv is not None:
        spectra, filters = run_dir / "filter_spectra.png", run_dir / "filters.png"
        plot_first_layer_filters(conv, sample_rate, spectra, filters)
        written += [spectra, filters]
    return written


def load_for_evaluation(
    ckpt_path: str | Path,
    data_overrides: DictConfig | dict[str, Any],
    split: str = "auto",
    trusted_modules: Sequence[str] = (),
) -> tuple[TaggingModule, dict[str, Any], ClipDataModule, str]:
    """The trained module, its run config, its data and the split to evaluate.

    The data is the run config's ``data`` with ``data_overrides`` merged in; ``split`` is
    test, val or auto (test if the data has a test split, else val). The merged data config
    passes the gate of ``tagger.targets`` as the stored one did. Raises ``ConfigError``
    for an unreadable or unsafe checkpoint or a split the data does not have.
    """
    model, run_config = load_trained(ckpt_path, trusted_modules)
    merged = OmegaConf.merge(run_config["data"], data_overrides)
    data = OmegaConf.to_container(merged, resolve=True)
    check_built_node(data, "data", "data", f"checkpoint {ckpt_path} with the data overrides",
                     trusted_modules)  # fmt: skip
    check_settings({"data": data})  # the stored values, as train.py checked them
    datamodule: ClipDataModule = instantiate(data)
    sizes = datamodule.split_sizes()
    if split == "auto":
        split = "test" if sizes["test_clips"] else "val"
    if not sizes.get(f"{split}_clips"):
        raise ConfigError(f"split={split}: this data has no such split ({sizes})")
    return model, run_config, datamodule, split


def split_predictions(
    trainer: L.Trainer, model: TaggingModule, loader: Any, ckpt_path: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every clip of ``loader`` once, in clip order: its index [N], probabilities [N, K]
    (float32, whatever precision computed them) and labels [N, K], on the CPU, scored by
    ``model`` with the weights of ``ckpt_path`` (None: its own) through ``trainer.predict``.
    Under DDP every process calls it and gets the clips of all (a clip that two processes
    scored, padding, counts once)."""
    outputs = trainer.predict(model, dataloaders=loader, ckpt_path=ckpt_path)
    if outputs is None:
        raise RuntimeError("trainer.predict returned no predictions (a spawning strategy?)")
    parts = [tuple(torch.cat([batch[key].cpu() for batch in outputs])
                   for key in ("index", "probs", "labels"))]  # fmt: skip
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, parts[0])
        parts = gathered
    index, probs, labels = (torch.cat([part[i] for part in parts]) for i in range(3))
    _, first = np.unique(index.numpy(), return_index=True)  # sorted by clip index
    keep = torch.from_numpy(first)
    return index[keep], probs[keep].float(), labels[keep]


def fit_decisions(
    trainer: L.Trainer,
    model: TaggingModule,
    datamodule: ClipDataModule,
    rule: str,
    ckpt_path: str | Path | None = None,
) -> Thresholds:
    """The decision thresholds of ``model`` (with ``ckpt_path``'s weights, if given), fitted
    on the validation split of ``datamodule`` by ``rule`` (``tagger.decisions``)."""
    _, probs, labels = split_predictions(trainer, model, datamodule.loader("val"), ckpt_path)
    return fit_thresholds(probs.numpy(), labels.numpy(), rule)


def thresholds_section(thresholds: Thresholds, tag_names: list[str], source: str,
                       checkpoint: str | None) -> dict[str, Any]:  # fmt: skip
    """``metrics.json``'s ``thresholds``: the checkpoint's stored form (rule, split, values),
    the tags that had no positive validation clip, where they come from (``source``) and
    the checkpoint whose scores they were fitted to."""
    return {
        **thresholds.stored(tag_names),
        "no_positive": [tag_names[k] for k in thresholds.no_positive],
        "source": source,
        "checkpoint": checkpoint,
    }


def decisions_summary(thresholds: Thresholds, probs: Any, labels: Any,
                      tag_names: list[str]) -> dict[str, Any]:  # fmt: skip
    """Precision, recall and F1 (micro, macro, per tag) of the decisions ``probs`` [N, K]
    >= ``thresholds`` against ``labels`` (``tagger.decisions.decision_scores``)."""
    return decision_scores(labels, decide(probs, thresholds.values), tag_names)


def _eval_thresholds(
    cfg: DictConfig, trainer: L.Trainer, model: TaggingModule, datamodule: ClipDataModule
) -> tuple[Thresholds, str]:
    """The thresholds eval.py decides at, and their source: fitted on the checkpoint's
    validation split (``fitted``); else the checkpoint's own (``checkpoint``); else
    ``DEFAULT_THRESHOLD`` for every tag (``default``)."""
    if datamodule.split_sizes()["val_clips"]:
        rule = (cfg.get("decisions") or {}).get("rule", "per_tag")
        return fit_decisions(trainer, model, datamodule, rule), "fitted"
    if model.thresholds is not None:
        stored = model.thresholds
        return Thresholds(stored["rule"], threshold_array(stored, model.tag_names)), "checkpoint"
    return Thresholds("default", np.full(len(model.tag_names), DEFAULT_THRESHOLD)), "default"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; return what is written to metrics.json."""
    started = time.time()
    model, run_config, datamodule, split = load_for_evaluation(
        cfg.ckpt_path, cfg.data, cfg.split, module_names(cfg.get("trusted_modules") or [])
    )

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    index, probs, labels = split_predictions(trainer, model, datamodule.loader(split))
    scores = tag_scores(probs, labels)
    thresholds, source = _eval_thresholds(cfg, trainer, model, datamodule)

    run_dir = Path(cfg.paths.output_dir)
    clip_ids = datamodule.splits[split].clip_ids
    write_predictions(
        run_dir / "predictions.csv",
        [clip_ids[i] for i in index.tolist()],
        labels.numpy(),
        probs.numpy(),
        model.tag_names,
    )
    figures = write_figures(
        run_dir, Path(cfg.ckpt_path), model, datamodule.sample_rate, scores,
        [clip_ids[i] for i in index.tolist()], labels.numpy(), probs.numpy(),
    )  # fmt: skip
    summary = {
        "status": "completed",
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": split,
        "dataset": datamodule.describe(),
        f"{split}_clips": len(index),
        "tag_names": model.tag_names,
        split: {
            **scores_summary(scores, model.tag_names),
            "decisions": decisions_summary(
                thresholds, probs.numpy(), labels.numpy(), model.tag_names
            ),
        },
        "thresholds": thresholds_section(thresholds, model.tag_names, source,
                                         str(Path(cfg.ckpt_path).resolve())),
        "predictions": str(run_dir / "predictions.csv"),
        "figures": [str(path) for path in figures],
        "wall_time_s": round(time.time() - started, 2),
        "config": run_config,
    }
    write_json(run_dir / "metrics.json", summary)
    return summary
