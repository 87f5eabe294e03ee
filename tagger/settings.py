"""Settings of ``train.py`` checked before anything is built, each refused in one line that
names the setting and the values it takes."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from tagger.errors import ConfigError


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first setting of a composed ``train.py`` config that
    cannot work: the seed, batch size, windows per clip, learning rate, run length and the
    cosine schedule's length."""
    seed = cfg.get("seed")
    if seed is not None and not _whole(seed):
        raise ConfigError(f"seed must be a whole number (or null: not seeded), not {seed!r}")
    for key, unit in (("batch_size", "clips per batch"), ("n_subclips", "windows per clip")):
        value = cfg.data.get(key)
        if not _whole(value) or value < 1:
            raise ConfigError(f"data.{key} must be a positive whole number ({unit}), not {value!r}")
    lr = cfg.optimizer.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (0 < lr < math.inf):
        raise ConfigError(f"optimizer.lr must be a positive number, not {lr!r}")
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and (not _whole(max_epochs) or max_epochs < 1):
        raise ConfigError(
            f"trainer.max_epochs must be a positive whole number, not {max_epochs!r} "
            "(for no epoch limit: trainer.max_epochs=null, then trainer.max_steps=N, early "
            "stopping or a signal ends the run)"
        )
    scheduler = cfg.get("scheduler") or {}
    if "T_max" in scheduler and (not _whole(scheduler.T_max) or scheduler.T_max < 1):
        raise ConfigError(
            f"scheduler.T_max must be a positive whole number of epochs, not {scheduler.T_max!r} "
            "(scheduler=cosine takes trainer.max_epochs; set one or the other)"
        )
    max_steps = cfg.trainer.get("max_steps", -1)
    if not _whole(max_steps) or (max_steps < 1 and max_steps != -1):
        raise ConfigError(
            f"trainer.max_steps must be a positive whole number or -1 (no limit), not {max_steps!r}"
        )


def lightning_max_epochs(max_epochs: int | None) -> int:
    """``trainer.max_epochs`` as Lightning takes it: null (no limit) is Lightning's -1; its
    own null would mean 1000 epochs."""
    return -1 if max_epochs is None else max_epochs
