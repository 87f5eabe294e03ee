"""``StepLog``: every step's loss reaches the loggers, in bulk, under its own step number."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from tagger.callbacks import StepLog


class Captured(Logger):
    """A logger that keeps what it is given: (step, metrics) rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "captured"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))


class Regression(L.LightningModule):
    """A linear model that records the loss of each training step as it returns it."""

    def __init__(self, logger: Captured) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.losses: list[float] = []
        self.rows_seen: list[int] = []  # rows the logger held when each step began
        self.captured = logger

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.rows_seen.append(len([r for r in self.captured.rows if "train/loss" in r[1]]))
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.linear(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_every_step_is_logged_with_its_step_number_in_bulk() -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(14, 3, generator=generator), torch.randn(14, 1, generator=generator)
    )
    logger = Captured()
    module = Regression(logger)
    trainer = L.Trainer(
        max_epochs=2, logger=logger, callbacks=[StepLog(every_n_steps=3)],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=2))  # 7 steps per epoch

    steps = [(step, row) for step, row in logger.rows if "train/loss" in row]
    assert [step for step, _ in steps] == list(range(14))
    assert [row["train/loss"] for _, row in steps] == pytest.approx(module.losses)
    assert [row["epoch"] for _, row in steps] == [0] * 7 + [1] * 7
    assert all(row["train/step_time"] > 0 for _, row in steps)
    # written 3 at a time and at the end of each epoch, not step by step
    assert module.rows_seen[:8] == [0, 0, 0, 3, 3, 3, 6, 7]
    # the last epoch's mean loss is the run's final train/loss (metrics.json)
    final = trainer.callback_metrics["train/loss"].item()
    assert final == pytest.approx(sum(module.losses[7:]) / 7, rel=1e-6)


def test_every_n_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        StepLog(every_n_steps=0)
