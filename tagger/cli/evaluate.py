"""``python eval.py ckpt_path=PATH [split=val]``: evaluate a checkpoint on its own data.

The model and the data are rebuilt from the checkpoint alone (its hyperparameters and
the run config that training stored in it). Writes ``metrics.json`` and
``predictions.csv`` into the eval run's directory.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tagger.config import (
    CONFIG_DIR,
    ConfigError,
    check_group_choices,
    exit_on_config_error,
    quote_path_values,
    register_resolvers,
)
from tagger.data.datamodule import ClipDataModule
from tagger.metrics import tag_scores
from tagger.module import TaggingModule
from tagger.run_files import scores_summary, write_json, write_predictions

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> tuple[TaggingModule, dict[str, Any]]:
    """The trained module (eval mode) and the run config stored in a tagger checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (pass ckpt_path=PATH/TO/FILE.ckpt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise ConfigError(f"checkpoint {path} cannot be read: {error}") from None
    if "config" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ConfigError(f"{path} is not a checkpoint written by tagger's train.py")
    model = TaggingModule(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["config"]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; return what is written to metrics.json."""
    started = time.time()
    model, run_config = load_checkpoint(cfg.ckpt_path)
    datamodule: ClipDataModule = instantiate(OmegaConf.merge(run_config["data"], cfg.data))
    sizes = datamodule.split_sizes()
    split = cfg.split
    if split == "auto":
        split = "test" if sizes["test_clips"] else "val"
    if not sizes.get(f"{split}_clips"):
        raise ConfigError(f"split={split}: this data has no such split ({sizes})")

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    outputs = trainer.predict(model, dataloaders=datamodule.loader(split))
    index = torch.cat([batch["index"] for batch in outputs])
    probs = torch.cat([batch["probs"] for batch in outputs])
    labels = torch.cat([batch["labels"] for batch in outputs])
    scores = tag_scores(probs, labels)

    run_dir = Path(cfg.paths.output_dir)
    clip_ids = datamodule.splits[split].clip_ids
    write_predictions(
        run_dir / "predictions.csv",
        [clip_ids[i] for i in index.tolist()],
        labels.numpy(),
        probs.numpy(),
        model.tag_names,
    )
    summary = {
        "status": "completed",
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": split,
        "dataset": datamodule.describe(),
        f"{split}_clips": len(index),
        "tag_names": model.tag_names,
        split: scores_summary(scores, model.tag_names),
        "predictions": str(run_dir / "predictions.csv"),
        "wall_time_s": round(time.time() - started, 2),
        "config": run_config,
    }
    path = write_json(run_dir / "metrics.json", summary)
    log.info("%s/auc %.4f, %s/pr_auc %.4f; written to %s", split, scores.macro_roc_auc,
             split, scores.macro_pr_auc, path.parent)  # fmt: skip
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def hydra_main(cfg: DictConfig) -> float:
    try:
        summary = evaluate(cfg)
    except Exception as error:
        exit_on_config_error(error)
        raise
    return summary[summary["split"]]["auc"]


def main() -> None:
    """``python eval.py [overrides]``: quote path values, check group names, run."""
    sys.argv[1:] = quote_path_values(sys.argv[1:])
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        exit_on_config_error(error)
    hydra_main()


register_resolvers()
