"""A run killed with SIGKILL mid-epoch resumes from its step checkpoint and ends as if never
killed; the data position is part of the checkpoint. SIGTERM and SIGINT stop a run after
the current step with a checkpoint, ``metrics.json`` saying so, and exit 143 / 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import Callback, LightningModule, Trainer

from tagger.data.sampler import EpochShuffleSampler
from tagger.train import train
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


class PauseAt(Callback):
    """As training step ``step`` starts, writes ``marker`` and waits (up to a minute) for a
    signal that Lightning notes: the step in progress when a SIGTERM or SIGINT comes."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)


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


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of RUN never interrupted."""
    return train(compose_config("train", tmp_path_factory.mktemp("straight"), RUN))


@pytest.fixture(scope="module")
def straight_augmented(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of RUN with augment=standard, never interrupted."""
    run_dir = tmp_path_factory.mktemp("straight_augmented")
    return train(compose_config("train", run_dir, [*RUN, "augment=standard"]))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_the_first_epoch_stops_saves_and_auto_resume_gives_the_same_metrics(
    tmp_path: Path, straight: dict, signum: signal.Signals
) -> None:
    run_dir, marker = tmp_path / "stopped", tmp_path / "training"
    args = [str(REPO_ROOT / "train.py"), *RUN, f"hydra.run.dir={run_dir}", "ckpt_path=auto"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, *args, f"+callbacks.pause._target_={__name__}.PauseAt",
         "+callbacks.pause.step=4", f"+callbacks.pause.marker={marker}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)  # during step 4 of the 12 of epoch 0
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr

    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 5)  # step 4 finished, then it stopped
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["signal"] == signum.name
    assert stopped["global_step"] == 5 and stopped["checkpoints"]["last"] == str(last)
    assert f"tagger: stopped by {signum.name} at step 5 (epoch 0); resume with " in stderr

    resumed = run_cli(*args, cwd=tmp_path)  # the same command: auto finds last.ckpt
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {last}" in resumed.stdout + resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["global_step"] == 24
    assert results(metrics) == results(straight)
    assert metrics["test"]["auc"] == straight["test"]["auc"]


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["none", "standard"])
def test_sigkill_mid_epoch_then_auto_resume_gives_the_uninterrupted_metrics(
    tmp_path: Path, request: pytest.FixtureRequest, augment: str
) -> None:
    """With augment=standard too: the resumed run draws the augmentations the uninterrupted
    one drew (they depend on the seed and the step, nothing saved)."""
    straight = request.getfixturevalue("straight" if augment == "none" else "straight_augmented")
    run_dir = tmp_path / "killed"
    args = [str(REPO_ROOT / "train.py"), *RUN, f"augment={augment}", f"hydra.run.dir={run_dir}",
            "ckpt_path=auto"]  # fmt: skip
    killed = run_cli(*args, f"+callbacks.kill._target_={__name__}.SigkillAt",
                     f"+callbacks.kill.step={KILL_AT_STEP}", cwd=tmp_path)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 15)  # mid-epoch: 3 of 12 batches done
    assert len(last["state_dict"]["train_scores.scores"]) == 3  # the epoch's scores so far
    assert not (run_dir / "metrics.json").exists()

    resumed = run_cli(*args, cwd=tmp_path)  # the same command: auto finds last.ckpt
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 24

    assert results(metrics) == results(straight)
    assert metrics["test"]["auc"] == straight["test"]["auc"]
    if augment != "none":  # and the augmentation did change the run
        assert results(straight) != results(request.getfixturevalue("straight"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_before_training_stops_at_once_and_is_recorded(
    train_config, monkeypatch, capsys, signum: signal.Signals
) -> None:
    import tagger.cli.train as train_cli
    import tagger.train as train_workflow

    real_build = train_workflow.build_module
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN where started in the background

    def build_then_signal(*args: Any) -> LightningModule:
        module = real_build(*args)
        os.kill(os.getpid(), signum)  # while the run is being set up: nothing to save yet
        return module

    monkeypatch.setattr(train_workflow, "build_module", build_then_signal)
    cfg = train_config()
    with pytest.raises(SystemExit) as exit_info:
        train_cli.hydra_main(cfg)
    assert exit_info.value.code == 128 + signum
    recorded = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert (recorded["status"], recorded["signal"]) == ("interrupted", signum.name)
    assert recorded["checkpoints"]["last"] is None
    assert capsys.readouterr().err.strip() == f"tagger: stopped by {signum.name}; no checkpoint yet"
    assert signal.getsignal(signal.SIGINT) == handler_before  # handlers restored


def test_trainer_configs_set_the_atomic_writer_and_slurms_requeue(tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from tagger.checkpoint_io import AtomicCheckpointIO

    default = compose_config("train", tmp_path / "default", TINY)
    trainer = instantiate(default.trainer, logger=False, callbacks=[])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)

    slurm = compose_config("train", tmp_path / "slurm", ["trainer=slurm"])
    writer, environment = (instantiate(plugin) for plugin in slurm.trainer.plugins)
    assert isinstance(writer, AtomicCheckpointIO) and isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue and environment.requeue_signal == signal.SIGUSR1
