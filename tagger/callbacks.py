"""Lightning callbacks that Lightning does not ship."""

from __future__ import annotations

import time
from typing import Any

from lightning import Callback, LightningModule, Trainer


class StepTimer(Callback):
    """Logs ``train/step_time``: wall seconds of each training step (forward, backward, update)."""

    def __init__(self) -> None:
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        pl_module.log("train/step_time", time.perf_counter() - self._start, on_step=True)


class StoreRunConfig(Callback):
    """Saves the run's resolved config in every checkpoint, under ``"config"``.

    ``eval.py`` rebuilds the data module from it, so a checkpoint alone is enough.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["config"] = self.config
