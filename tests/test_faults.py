"""A run killed with SIGKILL mid-epoch resumes from its step checkpoint and ends as if never
killed; the data position is part of the checkpoint."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import Callback, LightningModule, Trainer

from tagger.cli.train import train
from tagger.data.sampler import EpochShuffleSampler
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli

# 120 training clips in batches of 10: 12 steps per epoch, a step checkpoint every 5
RUN = [
    *TINY,
    "data.train_clips=120",
    "trainer.max_epochs=2",
    "optimizer=adamw",
    "+data.random_windows=true",
    "+data.train_subclips=1",
    "callbacks.step_checkpoint.every_n_train_steps=5",
]
KILL_AT_STEP = 18  # epoch 1, batch 6; the last checkpoint is step 15 (epoch 1, batch 3)


class SigkillAt(Callback):
    """Kills its own process with SIGKILL as training step ``step`` starts (no clean-up runs)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def results(metrics: dict) -> dict[str, float]:
    """Final metrics without timings, and without the learning rate, which Lightning's
    LearningRateMonitor logs as an epoch starts (so not in an epoch resumed mid-way)."""
    return {
        k: v
        for k, v in metrics["final"].items()
        if k != "train/step_time" and not k.startswith("lr-")
    }


def test_sampler_resumes_inside_an_epoch() -> None:
    sampler = EpochShuffleSampler(20, seed=3)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.resume(epoch=2, position=7)
    assert list(sampler) == whole[7:]
    assert list(sampler) == whole  # the next pass over the epoch is whole again


@pytest.mark.slow
def test_sigkill_mid_epoch_then_auto_resume_gives_the_uninterrupted_metrics(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "killed"
    args = [str(REPO_ROOT / "train.py"), *RUN, f"hydra.run.dir={run_dir}", "ckpt_path=auto"]
    killed = run_cli(*args, f"+callbacks.kill._target_={__name__}.SigkillAt",
                     f"+callbacks.kill.step={KILL_AT_STEP}", cwd=tmp_path)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 15)  # mid-epoch: 3 of 12 batches done
    assert len(last["state_dict"]["train_scores.scores"]) == 3  # the epoch's scores so far
    assert not (run_dir / "metrics.json").exists()

    resumed = run_cli(*args, cwd=tmp_path)  # the same command: auto finds last.ckpt
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 24

    straight = train(compose_config("train", tmp_path / "straight", RUN))
    assert results(metrics) == results(straight)
    assert metrics["test"]["auc"] == straight["test"]["auc"]
