"""``python eval.py ckpt_path=PATH [split=val]``: evaluate a checkpoint on its own data.

The workflow, and the files it writes, is ``tagger.evaluate.evaluate``; this is its command
line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tagger.cli.hydra_setup import exit_on_config_error, register_resolvers, run_hydra_entry
from tagger.config import CONFIG_DIR
from tagger.evaluate import evaluate
from tagger.settings import check_settings

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def hydra_main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the macro ROC-AUC on the evaluated split; a bad
    checkpoint, split or config exits with one line (status 2), a file that cannot be
    written too (status 1)."""
    try:
        check_settings(cfg)
        summary = evaluate(cfg)
    except Exception as error:
        exit_on_config_error(error)
        raise
    split = summary["split"]
    decisions, thresholds = summary[split]["decisions"], summary["thresholds"]
    log.info("%s/auc %.4f, %s/pr_auc %.4f; at the %s thresholds (%s): micro F1 %.4f, macro "
             "F1 %.4f; written to %s", split, summary[split]["auc"], split,
             summary[split]["pr_auc"], thresholds["rule"], thresholds["source"],
             decisions["micro"]["f1"], decisions["macro"]["f1"],
             Path(cfg.paths.output_dir))  # fmt: skip
    return summary[split]["auc"]


def main() -> None:
    """``python eval.py [overrides]``."""
    run_hydra_entry(hydra_main)


register_resolvers()
