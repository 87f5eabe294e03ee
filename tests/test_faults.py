"""A run killed with SIGKILL mid-epoch resumes from its step checkpoint and ends as if never
killed; the data position is part of the checkpoint. SIGTERM and SIGINT stop a run after
the current step with a checkpoint, ``metrics.json`` saying so, and exit 143 / 130; at any
point (training, validation, test) the same command with ``ckpt_path=auto`` then ends with
the metrics of the run never stopped."""

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


class PauseIn(Callback):
    """As batch ``batch`` of a validation inside fit (``stage="validate"``, epoch ``epoch``,
    not the sanity check) or of the test (``stage="test"``) starts, writes ``marker`` and
    waits (up to a minute) for the file ``go``: the test sends its signals, then writes it."""

    def __init__(self, stage: str, batch: int, marker: str, go: str, epoch: int = 0) -> None:
        self.stage, self.batch, self.epoch = stage, batch, epoch
        self.marker, self.go = Path(marker), Path(go)

    def _pause(self, trainer: Trainer, batch_idx: int) -> None:
        if batch_idx != self.batch or trainer.sanity_checking:
            return
        self.marker.touch()
        deadline = time.monotonic() + 60
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule,
                                  batch: Any, batch_idx: int, *_: Any) -> None:  # fmt: skip
        if self.stage == "validate" and trainer.current_epoch == self.epoch:
            self._pause(trainer, batch_idx)

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule,
                            batch: Any, batch_idx: int, *_: Any) -> None:  # fmt: skip
        if self.stage == "test":
            self._pause(trainer, batch_idx)


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


#: RUN for up to 3 epochs, with early stopping that stops it after 2 (no epoch can improve
#: val/auc by 1): a resumed run must neither forget that decision nor train a third epoch.
EARLY = [
    *RUN,
    "trainer.max_epochs=3",
    "callbacks.early_stopping.patience=1",
    "callbacks.early_stopping.min_delta=1.0",
]


@pytest.fixture(scope="module")
def straight_early(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of EARLY never interrupted: early stopping ends it after 2 epochs."""
    summary = train(compose_config("train", tmp_path_factory.mktemp("straight_early"), EARLY))
    assert (summary["epochs"], summary["global_step"]) == (2, 24)
    return summary


def comparable(metrics: dict) -> dict:
    """Everything ``metrics.json`` says of a run's results: ``results`` and the validation,
    test and best scores (not paths, timings or the config)."""
    test = {k: v for k, v in metrics["test"].items() if k != "checkpoint"}
    return {"final": results(metrics), "val": metrics["val"], "test": test,
            "best": metrics["best"], "epochs": metrics["epochs"],
            "global_step": metrics["global_step"]}  # fmt: skip


#: RUN without callbacks: no checkpoint but the one a signal saves.
BARE = [*(a for a in RUN if not a.startswith(("~callbacks", "callbacks."))), "callbacks=none"]


@pytest.fixture(scope="module")
def straight_bare(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of BARE never interrupted."""
    return train(compose_config("train", tmp_path_factory.mktemp("straight_bare"), BARE))


def stop_and_resume(tmp_path: Path, callback: list[str], signals: list[signal.Signals],
                    config: list[str] = EARLY) -> dict:  # fmt: skip
    """Start ``config`` (EARLY) in a subprocess with the pausing ``callback`` overrides (which get
    ``marker`` and ``go``), send ``signals`` once it pauses, let it go on, and wait for it
    to stop; then run the same command with ``ckpt_path=auto`` to its end. Returns the
    stopped process's ``returncode`` and ``stderr``, the (epoch, global step) of the
    ``last.ckpt`` it left (``saved``), the ``run_dir`` and the resumed run's ``metrics``."""
    run_dir, marker, go = tmp_path / "stopped", tmp_path / "paused", tmp_path / "go"
    args = [str(REPO_ROOT / "train.py"), *config, f"hydra.run.dir={run_dir}", "ckpt_path=auto"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, *args, *callback, f"+callbacks.pause.marker={marker}",
         f"+callbacks.pause.go={go}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for signum in signals:
        proc.send_signal(signum)
        time.sleep(0.3)  # handled before the next one comes
    go.touch()
    _, stderr = proc.communicate(timeout=120)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)

    resumed = run_cli(*args, cwd=tmp_path)  # the same command: auto finds last.ckpt
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in log
    return {"returncode": proc.returncode, "stderr": stderr, "run_dir": run_dir,
            "saved": (last["epoch"], last["global_step"]),
            "metrics": json.loads((run_dir / "metrics.json").read_text())}  # fmt: skip


SIGNALS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT],
                                  ids=["SIGTERM", "SIGINT"])  # fmt: skip


@pytest.mark.slow
@SIGNALS
def test_a_signal_during_validation_lets_it_end_then_stops_and_auto_resume_gives_the_same_metrics(
    tmp_path: Path, straight_early: dict, signum: signal.Signals
) -> None:
    """Stopped mid-validation, the run used to save a checkpoint that held half an epoch's
    validation scores (a resume failed, or reported a wrong val/auc). Now the validation
    ends, the epoch's checkpoints are saved, and the run stops."""
    pause = [f"+callbacks.pause._target_={__name__}.PauseIn", "+callbacks.pause.stage=validate",
             "+callbacks.pause.batch=1"]  # fmt: skip
    run = stop_and_resume(tmp_path, pause, [signum])
    assert run["returncode"] == 128 + signum, run["stderr"][-3000:]
    assert "Traceback" not in run["stderr"]
    assert f"tagger: stopped by {signum.name} at step 12 (epoch 1); resume " in run["stderr"]
    assert run["saved"] == (0, 12)  # epoch 0's end, validated
    assert comparable(run["metrics"]) == comparable(straight_early)


@pytest.mark.slow
def test_without_checkpoint_callbacks_the_signals_checkpoint_resumes_after_the_epoch(
    tmp_path: Path, straight_bare: dict
) -> None:
    """With no LastCheckpoint, the checkpoint the stop saves is the epoch's end: Lightning
    stops after counting the epoch completed, and that state used to resume into an
    empty epoch."""
    pause = [f"+callbacks.pause._target_={__name__}.PauseIn", "+callbacks.pause.stage=validate",
             "+callbacks.pause.batch=1"]  # fmt: skip
    run = stop_and_resume(tmp_path, pause, [signal.SIGTERM], BARE)
    assert run["returncode"] == 143, run["stderr"][-3000:]
    assert run["saved"] == (0, 12)
    assert comparable(run["metrics"]) == comparable(straight_bare)


@pytest.mark.slow
def test_a_signal_in_the_step_before_a_validation_waits_for_it(
    tmp_path: Path, straight_early: dict
) -> None:
    """Lightning notes the signal in the epoch's last step and would stop in the validation
    that follows; the validation runs whole, and the run stops at the epoch's end."""
    pause = [f"+callbacks.pause._target_={__name__}.PauseAt", "+callbacks.pause.step=11"]
    run_dir, marker = tmp_path / "stopped", tmp_path / "paused"
    args = [str(REPO_ROOT / "train.py"), *EARLY, f"hydra.run.dir={run_dir}", "ckpt_path=auto"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, *args, *pause, f"+callbacks.pause.marker={marker}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # during step 11, the last of epoch 0
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 12)  # the epoch's end, validated
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert comparable(metrics) == comparable(straight_early)


@pytest.mark.slow
def test_a_second_signal_during_validation_stops_at_once_and_the_last_checkpoint_stands(
    tmp_path: Path, straight_early: dict
) -> None:
    pause = [f"+callbacks.pause._target_={__name__}.PauseIn", "+callbacks.pause.stage=validate",
             "+callbacks.pause.batch=1"]  # fmt: skip
    run = stop_and_resume(tmp_path, pause, [signal.SIGINT, signal.SIGINT])
    assert run["returncode"] == 130, run["stderr"][-3000:]
    assert "Traceback" not in run["stderr"]
    assert "tagger: stopped by SIGINT; resume with " in run["stderr"]
    assert run["saved"] == (0, 10)  # the step checkpoint before the validation
    assert comparable(run["metrics"]) == comparable(straight_early)


@pytest.mark.slow
@SIGNALS
def test_a_signal_during_the_test_then_auto_resume_tests_and_writes_complete_metrics(
    tmp_path: Path, straight_early: dict, signum: signal.Signals
) -> None:
    """Fitting had ended (early stopping after 2 of 3 epochs): the resumed run fits nothing,
    trains no third epoch, and writes the final, validation and test results of the run
    never stopped (it used to write a "completed" metrics.json without them)."""
    pause = [f"+callbacks.pause._target_={__name__}.PauseIn", "+callbacks.pause.stage=test",
             "+callbacks.pause.batch=1"]  # fmt: skip
    run = stop_and_resume(tmp_path, pause, [signum])
    assert run["returncode"] == 128 + signum, run["stderr"][-3000:]
    assert "Traceback" not in run["stderr"]
    assert f"tagger: stopped by {signum.name} at step 24 (epoch 2); resume " in run["stderr"]
    assert run["saved"] == (1, 24)  # the last epoch's end
    metrics = run["metrics"]
    assert metrics["status"] == "completed"
    assert comparable(metrics) == comparable(straight_early)
    best = Path(straight_early["checkpoints"]["best"]).name
    assert metrics["test"]["checkpoint"] == str(run["run_dir"] / "checkpoints" / best)


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
