"""``python train.py [overrides]``: train a tagger; writes ``metrics.json`` to the run directory.

The workflow is ``tagger.train.train``; this is its command line: one-line errors, exit
codes, sweeps.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from tagger.callbacks import RunInterrupted
from tagger.cli.hydra_setup import (
    exit_on_config_error,
    quote_path_values,
    register_resolvers,
    run_hydra_entry,
)
from tagger.config import CONFIG_DIR
from tagger.errors import ConfigError
from tagger.train import hold_run_folder, record_failure, record_interruption, train

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _interrupted(cfg: DictConfig, stop: RunInterrupted) -> SystemExit:
    """Record a run stopped by a signal and say how to resume it; the exit is 128 + signal."""
    resume = record_interruption(cfg, stop)
    how = (f"resume with ckpt_path={resume} (or ckpt_path=auto and the same hydra.run.dir)"
           if resume else "no checkpoint yet")  # fmt: skip
    print(f"tagger: {stop}; {how}", file=sys.stderr)
    return SystemExit(128 + stop.signum)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final ``optimized_metric`` (default val/auc) for sweepers.

    A failed run records its reason in ``metrics.json``. In a ``-m`` sweep the other jobs
    still run; a single run exits non-zero (one line for a bad config, a full disk or a NaN
    loss). A run stopped by SIGTERM or SIGINT records ``status: interrupted`` and exits
    with 128 + the signal's number (143, 130), in a sweep too. A run directory that another
    training holds is refused in one line, and nothing is written to it (``main`` takes a
    run directory fixed on the command line even before Hydra writes there).
    """
    torch.set_float32_matmul_precision("high")
    try:
        run_folder = hold_run_folder(cfg)  # held while the run is recorded too
    except ConfigError as error:  # held by another training, or not writable: record nothing
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job %s refused, the sweep goes on: %s", HydraConfig.get().job.num, error)
            return float("nan")
        exit_on_config_error(error)
        raise
    with run_folder:
        return _run(cfg)


def _run(cfg: DictConfig) -> float | None:
    """Train, record the outcome, and return the optimized metric (``hydra_main``)."""
    try:
        summary = train(cfg)
    except RunInterrupted as stop:
        raise _interrupted(cfg, stop) from None
    except Exception as error:
        reason = record_failure(cfg, error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job %s failed, the sweep goes on: %s", HydraConfig.get().job.num, reason)
            return float("nan")  # a failed trial to Optuna; ignored by other launchers
        exit_on_config_error(error)
        if isinstance(error, FloatingPointError):
            print(f"tagger: error: {reason}", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    if rank_zero_only.rank == 0:  # under DDP, the process that wrote metrics.json
        final, best = summary["final"], summary["best"]
        log.info(
            "final val/auc %.4f (best %.4f)%s%s; metrics in %s",
            final.get("val/auc", float("nan")),
            best.get("val/auc", float("nan")),
            f", test/auc {summary['test']['auc']:.4f}" if "test" in summary else "",
            _test_f1(summary),
            Path(summary["run_dir"]) / "metrics.json",
        )
    return summary["final"].get(cfg.get("optimized_metric", "val/auc"))


def _test_f1(summary: dict) -> str:
    """``, test micro F1 x, macro F1 y (per_tag thresholds)`` when the run has them."""
    decisions = summary.get("test", {}).get("decisions")
    if decisions is None:
        return ""
    return (f", test micro F1 {decisions['micro']['f1']:.4f}, macro F1 "
            f"{decisions['macro']['f1']:.4f} ({summary['thresholds']['rule']} thresholds)")


def fixed_run_dir(args: list[str]) -> Path | None:
    """The run directory that a single run's command line fixes (``hydra.run.dir=DIR``
    with no interpolation), else None: a default run directory is new (its name holds a
    random id), so only a fixed one can be another training's."""
    if "-m" in args or "--multirun" in args:
        return None
    parser = OverridesParser.create()
    for arg in quote_path_values(args):
        if "hydra.run.dir=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # Hydra itself will say what is wrong with it
            return None
        value = override.value()
        if override.key_or_group == "hydra.run.dir" and isinstance(value, str):
            return None if "${" in value else Path(value).absolute()
    return None


def study_override(args: list[str]) -> list[str]:
    """``args`` with ``+study=NAME`` as ``study=NAME``. conf/train.yaml has a place for a
    study (``study: null``, before ``debug`` so that ``debug=quick`` applies after the
    study's own settings), and Hydra refuses to add a second one with ``+``."""
    return [arg[1:] if arg.startswith("+study=") else arg for arg in args]


def main() -> None:
    """``python train.py [overrides]``. A fixed run directory is taken before Hydra writes
    its ``.hydra/`` snapshot there, so a refused second training changes nothing in it.
    ``study=NAME`` (or ``+study=NAME``) runs a study, a multirun with its report."""
    sys.argv[1:] = study_override(sys.argv[1:])
    folder = fixed_run_dir(sys.argv[1:])
    try:
        held = hold_run_folder(folder) if folder is not None else contextlib.nullcontext()
    except ConfigError as error:
        exit_on_config_error(error)
        raise
    with held:
        run_hydra_entry(hydra_main)


register_resolvers()
