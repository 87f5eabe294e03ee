"""The training workflow: ``train(cfg)`` fits, validates and tests a composed ``train.py``
config and returns the run's summary, which it also writes to ``<run dir>/metrics.json``.

After fitting, the decision thresholds are fitted on the validation split for the best
checkpoint (and for ``last.ckpt``, to its own weights), stored in those checkpoint files
(``checkpoint["thresholds"]``) and in ``metrics.json``, and the test split's precision,
recall and F1 at them are reported (``decide_and_store``; ``tagger.decisions``).

With ``init_from=CKPT`` the new run starts from a trained checkpoint's weights
(fine-tuning: ``start_from``, ``tagger.module.init_from_checkpoint``), and what was loaded
and what not is logged and kept in ``metrics.json`` (``init_from``).

Runs that do not complete are recorded too (``record_failure``, ``record_interruption``);
saying so to the user and choosing the exit code is left to ``tagger.cli.train``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from tagger.augment import augment_callbacks
from tagger.callbacks import FitState, RunInterrupted, StopOnSignal, StoreRunConfig
from tagger.checkpoint_io import read_checkpoint, store_in_checkpoint
from tagger.data.datamodule import ClipDataModule
from tagger.decisions import CHECKPOINT_KEY, Thresholds
from tagger.errors import ConfigError, find_config_error
from tagger.evaluate import decisions_summary, fit_decisions, split_predictions, thresholds_section
from tagger.lock import ProcessLock, children_end_with_this_process
from tagger.metrics import logged_summary
from tagger.module import TaggingModule, build_module, init_from_checkpoint
from tagger.run_files import OutputError, write_json
from tagger.settings import check_last_batch, check_settings, lightning_max_epochs
from tagger.targets import module_names

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as ``callbacks`` or ``logger``."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())}


def _newest_readable(checkpoint_dir: Path) -> Path | None:
    """The run's checkpoint to resume from: ``last.ckpt``, else the newest other ``*.ckpt``
    of ``checkpoint_dir``; unreadable ones are skipped with a warning."""
    found = sorted(checkpoint_dir.glob("*.ckpt"),
                   key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime))  # fmt: skip
    for path in found:
        try:
            read_checkpoint(path)
        except ConfigError as error:
            log.warning("ckpt_path=auto: skipping %s", error)
            continue
        return path
    return None


#: The lock file a training holds in its run directory while it runs (``hold_run_folder``).
RUN_LOCK = ".train.lock"


def _lock(path: Path, what: str) -> ProcessLock | contextlib.nullcontext:
    """Hold ``path`` (see ``tagger.lock``) for a training writing ``what``; on one process
    only under DDP (its other processes write nothing of their own). A lock file that
    cannot be written raises ``OutputError``."""
    if rank_zero_only.rank != 0:
        return contextlib.nullcontext()
    try:
        return ProcessLock(path, lambda holder: (
            f"{what} is in use by another training ({holder}); wait for it to end, or stop "
            "it and run this command again to resume it, or give this run its own "
            "hydra.run.dir"
        ))  # fmt: skip
    except OSError as error:
        raise OutputError.of(path, error) from None


def hold_run_folder(cfg: DictConfig | Path) -> ProcessLock | contextlib.nullcontext:
    """Take the run directory (``cfg.paths.output_dir``, or a path) for this process, as a
    context manager: one training writes its checkpoints and records at a time. A second
    one is refused at once (``LockBusyError``, naming the folder and the holder's pid);
    the lock ends with its process, however it ends."""
    folder = cfg if isinstance(cfg, Path) else Path(cfg.paths.output_dir)
    return _lock(folder / RUN_LOCK, f"run folder {folder}")


def hold_checkpoint_folder(cfg: DictConfig) -> ProcessLock | contextlib.nullcontext:
    """Take the folder the checkpoints are saved to (another run's, when resuming from
    one of its checkpoints) with a lock file beside it, as ``hold_run_folder`` does."""
    folder = Path(cfg.paths.checkpoint_dir)
    return _lock(folder.parent / f".{folder.name}.lock", f"checkpoint folder {folder}")


def resolve_checkpoint(cfg: DictConfig) -> None:
    """Settle ``ckpt_path`` and keep saving checkpoints in the folder of the one resumed from.

    ``ckpt_path=auto`` is this run directory's newest readable checkpoint (``last.ckpt``
    unless it is damaged) when there is one (a restarted command with the same
    ``hydra.run.dir``), else a fresh start. A given checkpoint is read once here, so a
    missing, damaged or unsafe file is refused in one line before training.
    Lightning restores the best score and the best/last paths only when the checkpoint
    folder is unchanged; in a new folder the resumed run would forget its best epoch.
    """
    if cfg.get("ckpt_path") == "auto":
        found = _newest_readable(Path(cfg.paths.checkpoint_dir))
        cfg.ckpt_path = None if found is None else str(found)
        log.info("ckpt_path=auto: %s",
                 f"resuming from {found}" if found else "no checkpoint yet, starting")  # fmt: skip
    elif cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path)
    if cfg.get("ckpt_path"):
        cfg.paths.checkpoint_dir = str(Path(cfg.ckpt_path).resolve().parent)


def check_init_from(cfg: DictConfig) -> None:
    """Refuse ``init_from`` with a given ``ckpt_path`` in one line: one starts a new run from
    a checkpoint's weights, the other resumes a run. (With ``ckpt_path=auto`` a restarted
    fine-tuning resumes its own checkpoint once it has one: ``start_from``.)"""
    if cfg.get("init_from") and cfg.get("ckpt_path") not in (None, "auto"):
        raise ConfigError(
            "init_from and ckpt_path cannot be given together: init_from=CKPT starts a new "
            "run from a checkpoint's weights (fine-tuning), ckpt_path=CKPT resumes the run "
            "that wrote it; give one"
        )


def start_from(cfg: DictConfig, model: TaggingModule, datamodule: ClipDataModule
               ) -> dict[str, Any] | None:  # fmt: skip
    """Load ``init_from``'s weights into the new run's ``model`` (``init_from_checkpoint``)
    and log what was loaded and what not; the record for ``metrics.json``, or None without
    ``init_from``. A run resuming its own checkpoint (``ckpt_path=auto`` after a restart)
    takes its weights from there instead."""
    path = cfg.get("init_from")
    if not path:
        return None
    if cfg.get("ckpt_path"):
        log.info("init_from: not loaded, the run resumes from %s", cfg.ckpt_path)
        return {"checkpoint": path, "resumed_from": cfg.ckpt_path}
    trusted = module_names(list(cfg.get("trusted_modules") or ()))
    report = init_from_checkpoint(model, path, trusted, datamodule.sample_rate)
    log.info("init_from %s: %d weights of %s loaded, %d not loaded (tags: %s)", path,
             len(report["loaded"]), report["network"], len(report["not_loaded"]),
             report["tags"])  # fmt: skip
    layers: dict[tuple[str, str], list[str]] = {}  # (layer, reason): its weights
    for name, reason in report["not_loaded"].items():
        layer, _, weight = name.rpartition(".")
        layers.setdefault((layer, reason), []).append(weight)
    for (layer, reason), weights in layers.items():
        log.info("init_from: %s (%s) not loaded: %s", layer, ", ".join(weights), reason)
    if "warning" in report:
        log.warning("init_from: %s", report["warning"])
    return report


def checkpoint_summary(trainer: L.Trainer) -> tuple[dict[str, str | None], dict[str, float]]:
    """Paths of the best and last checkpoints, and the best monitored score."""
    paths: dict[str, str | None] = {"best": None, "last": None}
    best: dict[str, float] = {}
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.best_model_path:
            continue
        if callback.monitor is None:  # conf/callbacks/last_checkpoint.yaml
            paths["last"] = callback.best_model_path
        else:
            paths["best"] = callback.best_model_path
            best = {callback.monitor: float(callback.best_model_score)}
    return paths, best


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, validate and (optionally) test with a composed config; return the summary
    that is also written to ``<run dir>/metrics.json``.

    SIGTERM and SIGINT stop training after the current step (a validation inside fit
    after it ends) and save a resumable ``last.ckpt``; then ``RunInterrupted`` is raised.
    The run directory and the checkpoint folder are this process's while it runs
    (``hold_run_folder``), and its DataLoader workers end with it.
    """
    check_settings(cfg)
    check_init_from(cfg)
    with hold_run_folder(cfg):
        resolve_checkpoint(cfg)
        with hold_checkpoint_folder(cfg):
            stop = StopOnSignal(Path(cfg.paths.checkpoint_dir) / "last.ckpt")
            with stop.handling_signals(), children_end_with_this_process():
                try:
                    return _train(cfg, stop)
                except SIGTERMException:
                    raise stop.interrupted() from None


def _train(cfg: DictConfig, stop: StopOnSignal) -> dict[str, Any]:
    started = time.time()
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule: ClipDataModule = instantiate(cfg.data)
    model = build_module(cfg, datamodule.tag_names)
    started_from = start_from(cfg, model, datamodule)
    if model.frozen_part != "none":
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        log.info("model.freeze=%s: %d of %d parameters frozen (their layers in eval mode)",
                 model.frozen_part, frozen, sum(p.numel() for p in model.parameters()))
    sizes = datamodule.split_sizes()  # builds the splits now, so bad data fails before training
    log.info("data: %s; %s", datamodule.describe()["name"], sizes)

    fit_state = FitState()
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*instantiate_all(cfg.get("callbacks")), *augment_callbacks(cfg),
                   StoreRunConfig(run_config), fit_state, stop],
        logger=instantiate_all(cfg.get("logger")) or False,
        max_epochs=lightning_max_epochs(cfg.trainer.max_epochs),
    )
    check_last_batch(model, datamodule, trainer.world_size)  # before a crash at epoch end
    with warnings.catch_warnings():
        if model.frozen_part != "none":  # its frozen part is in eval mode on purpose
            warnings.filterwarnings("ignore", r".*module\(s\) in eval mode at the start of")
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.received_sigterm:  # came as fitting ended: its final last.ckpt stands
        raise stop.interrupted_after_fit(trainer)
    final = _floats(fit_state.final_metrics())

    checkpoints, best = checkpoint_summary(trainer)

    summary: dict[str, Any] = {
        "status": "completed",
        "dataset": datamodule.describe(),
        **sizes,
        "tag_names": datamodule.tag_names,
        **({"init_from": started_from} if started_from else {}),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "final": final,
        "best": best,
    }
    if "val/auc" in final:
        summary["val"] = logged_summary(final, "val", datamodule.tag_names)

    deciding = sizes["val_clips"] > 0 and not trainer.fast_dev_run
    rule = (cfg.get("decisions") or {}).get("rule", "per_tag")
    if deciding:  # the best checkpoint's (or the final weights'), before another is loaded
        thresholds = fit_decisions(trainer, model, datamodule, rule, checkpoints["best"])
        summary["thresholds"] = thresholds_section(
            thresholds, datamodule.tag_names, "fitted", checkpoints["best"] or "final weights"
        )

    if cfg.get("test") and sizes["test_clips"] > 0 and not trainer.fast_dev_run:
        (tested,) = trainer.test(model, datamodule=datamodule, ckpt_path=checkpoints["best"])
        summary["test"] = {
            **logged_summary(tested, "test", datamodule.tag_names),
            "checkpoint": checkpoints["best"] or "final weights",
        }
        if deciding:
            _, probs, labels = split_predictions(trainer, model, datamodule.loader("test"),
                                                 checkpoints["best"])  # fmt: skip
            summary["test"]["decisions"] = decisions_summary(
                thresholds, probs.numpy(), labels.numpy(), datamodule.tag_names
            )
    if deciding:
        decide_and_store(trainer, model, datamodule, rule, checkpoints, thresholds)

    summary.update(
        checkpoints=checkpoints,
        run_dir=cfg.paths.output_dir,
        wall_time_s=round(time.time() - started, 2),
        config=run_config,
    )
    if trainer.is_global_zero:  # under DDP, one process writes the run's files
        write_json(Path(cfg.paths.output_dir) / "metrics.json", summary)
    return summary


def decide_and_store(
    trainer: L.Trainer,
    model: TaggingModule,
    datamodule: ClipDataModule,
    rule: str,
    checkpoints: Mapping[str, str | None],
    best: Thresholds,
) -> None:
    """Store the thresholds in the run's checkpoint files (``checkpoint["thresholds"]``,
    rewritten whole through ``store_in_checkpoint``): ``best``, fitted to the best
    checkpoint, in it; ``last.ckpt`` (when it is another file) gets its own, fitted to its
    weights on the validation split. Every process scores; one writes."""
    tag_names = datamodule.tag_names
    fitted = {}
    if checkpoints["best"]:
        fitted[checkpoints["best"]] = best
    last = checkpoints["last"]
    if last and last not in fitted:
        fitted[last] = best if not checkpoints["best"] else fit_decisions(
            trainer, model, datamodule, rule, last
        )  # fmt: skip
    if trainer.is_global_zero:
        for path, thresholds in fitted.items():
            store_in_checkpoint(path, CHECKPOINT_KEY, thresholds.stored(tag_names))


def _record_end(cfg: DictConfig, record: dict[str, Any]) -> None:
    """Write ``metrics.json`` for a run that did not complete (``status`` failed or
    interrupted), for reports and sweeps; a file that cannot be written is logged."""
    if rank_zero_only.rank != 0:
        return
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # the failure may be in the config itself
        config = OmegaConf.to_container(cfg, resolve=False)
    try:
        write_json(Path(cfg.paths.output_dir) / "metrics.json", {**record, "config": config})
    except OutputError as error:
        log.error("%s", error)


def record_failure(cfg: DictConfig, error: Exception) -> str:
    """Record a failed run (``status: failed``) in its ``metrics.json``; return the reason in
    one sentence (for a diverged run, with where its last good checkpoint is)."""
    config_error = find_config_error(error)
    if config_error is not None:
        reason = str(config_error)
    elif isinstance(error, OutputError):  # already one line naming the file
        reason = str(error)
    elif not isinstance(error, FloatingPointError):
        reason = f"{type(error).__name__}: {error}"
    else:
        last = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint yet"
        reason = f"{error}; {kept}"
    _record_end(cfg, {"status": "failed", "error": reason})
    return reason


def record_interruption(cfg: DictConfig, stop: RunInterrupted) -> Path | None:
    """Record a run stopped by a signal (``status: interrupted``) in its ``metrics.json``;
    return the checkpoint it can resume from (None when there is none yet)."""
    resume = stop.checkpoint or Path(cfg.paths.checkpoint_dir) / "last.ckpt"
    resumable = resume if resume.is_file() else None
    _record_end(cfg, {
        "status": "interrupted",
        "signal": stop.signal_name,
        "error": str(stop),
        "epochs": stop.epoch,
        "global_step": stop.global_step,
        "checkpoints": {"last": str(resumable) if resumable else None},
    })  # fmt: skip
    return resumable
