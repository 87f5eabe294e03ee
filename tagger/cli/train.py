"""``python train.py [overrides]``: train a tagger; writes ``metrics.json`` to the run directory."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from tagger.callbacks import RunInterrupted, StopOnSignal, StoreRunConfig
from tagger.checkpoint_io import read_checkpoint
from tagger.checks import check_settings, lightning_max_epochs
from tagger.cli.hydra_setup import exit_on_config_error, register_resolvers, run_hydra_entry
from tagger.config import CONFIG_DIR
from tagger.data.datamodule import ClipDataModule
from tagger.errors import ConfigError, find_config_error
from tagger.module import build_module
from tagger.run_files import OutputError, scores_summary, write_json

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as ``callbacks`` or ``logger``."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
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


def _resolve_checkpoint(cfg: DictConfig) -> None:
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


def _checkpoint_summary(trainer: L.Trainer) -> tuple[dict[str, str | None], dict[str, float]]:
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

    SIGTERM and SIGINT stop training after the current step and save a resumable
    ``last.ckpt``; then ``RunInterrupted`` is raised.
    """
    check_settings(cfg)
    _resolve_checkpoint(cfg)
    stop = StopOnSignal(Path(cfg.paths.checkpoint_dir) / "last.ckpt")
    with stop.handling_signals():
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
    sizes = datamodule.split_sizes()  # builds the splits now, so bad data fails before training
    log.info("data: %s; %s", datamodule.describe()["name"], sizes)

    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*_instantiate_all(cfg.get("callbacks")), StoreRunConfig(run_config), stop],
        logger=_instantiate_all(cfg.get("logger")) or False,
        max_epochs=lightning_max_epochs(cfg.trainer.max_epochs),
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    final = _floats(trainer.callback_metrics)

    checkpoints, best = _checkpoint_summary(trainer)

    summary: dict[str, Any] = {
        "status": "completed",
        "dataset": datamodule.describe(),
        **sizes,
        "tag_names": datamodule.tag_names,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "final": final,
        "best": best,
    }
    if "val" in model.epoch_scores:
        summary["val"] = scores_summary(model.epoch_scores["val"], datamodule.tag_names)

    if cfg.get("test") and sizes["test_clips"] > 0 and not trainer.fast_dev_run:
        trainer.test(model, datamodule=datamodule, ckpt_path=checkpoints["best"])
        summary["test"] = {
            **scores_summary(model.epoch_scores["test"], datamodule.tag_names),
            "checkpoint": checkpoints["best"] or "final weights",
        }

    summary.update(
        checkpoints=checkpoints,
        run_dir=cfg.paths.output_dir,
        wall_time_s=round(time.time() - started, 2),
        config=run_config,
    )
    if not trainer.is_global_zero:  # under DDP, one process writes the run's files
        return summary
    path = write_json(Path(cfg.paths.output_dir) / "metrics.json", summary)
    log.info(
        "final val/auc %.4f (best %.4f)%s; metrics in %s",
        final.get("val/auc", float("nan")),
        best.get("val/auc", float("nan")),
        f", test/auc {summary['test']['auc']:.4f}" if "test" in summary else "",
        path,
    )
    return summary


def _failure_reason(cfg: DictConfig, error: Exception) -> str:
    """One sentence on why a run failed; for a diverged run, where its last good checkpoint is."""
    config_error = find_config_error(error)
    if config_error is not None:
        return str(config_error)
    if not isinstance(error, FloatingPointError):
        return f"{type(error).__name__}: {error}"
    last = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
    kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint yet"
    return f"{error}; {kept}"


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


def _interrupted(cfg: DictConfig, stop: RunInterrupted) -> SystemExit:
    """Record a run stopped by a signal and say how to resume it; the exit is 128 + signal."""
    resume = stop.checkpoint or Path(cfg.paths.checkpoint_dir) / "last.ckpt"
    resumable = resume.is_file()
    _record_end(cfg, {
        "status": "interrupted",
        "signal": stop.signal_name,
        "error": str(stop),
        "epochs": stop.epoch,
        "global_step": stop.global_step,
        "checkpoints": {"last": str(resume) if resumable else None},
    })  # fmt: skip
    how = (f"resume with ckpt_path={resume} (or ckpt_path=auto and the same hydra.run.dir)"
           if resumable else "no checkpoint yet")  # fmt: skip
    print(f"tagger: {stop}; {how}", file=sys.stderr)
    return SystemExit(128 + stop.signum)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final ``optimized_metric`` (default val/auc) for sweepers.

    A failed run records its reason in ``metrics.json``. In a ``-m`` sweep the other jobs
    still run; a single run exits non-zero (one line for a bad config, a full disk or a NaN
    loss). A run stopped by SIGTERM or SIGINT records ``status: interrupted`` and exits
    with 128 + the signal's number (143, 130), in a sweep too.
    """
    torch.set_float32_matmul_precision("high")
    try:
        summary = train(cfg)
    except RunInterrupted as stop:
        raise _interrupted(cfg, stop) from None
    except Exception as error:
        reason = _failure_reason(cfg, error)
        _record_end(cfg, {"status": "failed", "error": reason})
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job %s failed, the sweep goes on: %s", HydraConfig.get().job.num, reason)
            return float("nan")  # a failed trial to Optuna; ignored by other launchers
        exit_on_config_error(error)
        if isinstance(error, FloatingPointError):
            print(f"tagger: error: {reason}", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    return summary["final"].get(cfg.get("optimized_metric", "val/auc"))


def main() -> None:
    """``python train.py [overrides]``."""
    run_hydra_entry(hydra_main)


register_resolvers()
