"""Lightning callbacks that Lightning does not ship."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from tagger.errors import ConfigError


class StepLog(Callback):
    """Logs ``train/loss`` and ``train/step_time`` (wall seconds) of every training step.

    ``self.log`` in ``training_step`` costs Lightning's bookkeeping at every call:
    ``benchmarks/step_log_bench.py`` measured this callback about 2 ms a step faster than
    one ``self.log("train/loss", on_step=True, on_epoch=True)`` (median of 8 alternating
    rounds on 2 shared CPU cores: 5.7 vs 8.0 ms a step of ``baseline`` on batches of 2
    short clips; noisy, but every round in its favour; ``benchmarks/README.md``), so it
    is kept. It keeps each step's loss as a tensor
    and hands the values to the loggers every ``every_n_steps`` steps and at the end of
    each epoch, each under its own step number (optimizer steps before it: 0, 1, 2, ...).
    The epoch means go to the progress bar and ``trainer.callback_metrics`` (so
    ``metrics.json``), not to the loggers. Checkpoints hold the values not yet written,
    so a killed run loses none that its checkpoint saw.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, not {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._started = 0.0
        self._pending: list[tuple[int, int, Tensor, float]] = []  # step, epoch, loss, seconds
        self._epoch_loss: list[Tensor] = []
        self._epoch_seconds: list[float] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule,
                             *args: Any) -> None:  # fmt: skip
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           *args: Any) -> None:  # fmt: skip
        seconds = time.perf_counter() - self._started
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        self._pending.append((trainer.global_step - 1, trainer.current_epoch, loss, seconds))
        self._epoch_loss.append(loss)
        self._epoch_seconds.append(seconds)
        if len(self._pending) >= self.every_n_steps:
            self._write(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)
        if self._epoch_loss:
            means = {
                "train/loss": _stacked(self._epoch_loss).mean(),
                "train/step_time": sum(self._epoch_seconds) / len(self._epoch_seconds),
            }
            pl_module.log_dict(means, prog_bar=True, logger=False, sync_dist=True)
        self._epoch_loss, self._epoch_seconds = [], []

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule,
                     exception: BaseException) -> None:  # fmt: skip
        self._write(trainer)

    def state_dict(self) -> dict[str, Any]:
        """In every checkpoint: the epoch's values so far and the steps not yet written, so
        a run resumed mid-epoch logs and averages what an uninterrupted one would."""
        return {
            "pending": [(step, epoch, float(loss), s) for step, epoch, loss, s in self._pending],
            "epoch_loss": _stacked(self._epoch_loss).tolist() if self._epoch_loss else [],
            "epoch_seconds": list(self._epoch_seconds),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = [(step, epoch, torch.tensor(loss), seconds)
                         for step, epoch, loss, seconds in state_dict["pending"]]  # fmt: skip
        self._epoch_loss = [torch.tensor(loss) for loss in state_dict["epoch_loss"]]
        self._epoch_seconds = list(state_dict["epoch_seconds"])

    def _write(self, trainer: Trainer) -> None:
        """Hand the pending steps to every logger (one device sync for all their losses)."""
        if not self._pending:
            return
        losses = _stacked([loss for _, _, loss, _ in self._pending]).tolist()
        for (step, epoch, _, seconds), loss in zip(self._pending, losses, strict=True):
            row = {"train/loss": loss, "train/step_time": seconds, "epoch": epoch}
            for logger in trainer.loggers:
                logger.log_metrics(row, step=step)
        self._pending = []


def _stacked(losses: list[Tensor]) -> Tensor:
    """Scalar losses [n] on the device of the newest (those from a checkpoint are on CPU)."""
    device = losses[-1].device
    return torch.stack([loss.to(device) for loss in losses])


class LastCheckpoint(ModelCheckpoint):
    """The run's resumable ``last.ckpt`` in ``dirpath``, and its one writer: rewritten at the
    end of every training epoch (after the epoch's validation) and, with
    ``every_n_train_steps=N``, after every N-th training step as well (0: at epochs' ends only).

    Lightning's ``ModelCheckpoint`` takes one trigger; this is one with two. A step save on
    an epoch's last batch is left to the epoch's end, which follows it at the same step.

    Kept hand-written, measured against Lightning's own (Lightning 2.6): ``ModelCheckpoint``
    refuses ``every_n_train_steps`` with ``every_n_epochs``, so Lightning's way is two
    callbacks on ``last.ckpt`` (an epoch one and a step one), and the step one also saves on
    an epoch's last batch, before its validation. A run killed in that validation then
    resumes from it and ends with other training metrics: ``tests/test_step_checkpoint.py``
    fails with the pair and passes with this. (``save_last=True`` on the best-checkpoint
    callback rewrites ``last.ckpt`` only when a new best is saved.)
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0) -> None:
        whole = isinstance(every_n_train_steps, int) and not isinstance(every_n_train_steps, bool)
        if not whole or every_n_train_steps < 0:
            raise ConfigError(
                "callbacks.step_checkpoint.every_n_train_steps must be a whole number of steps "
                f">= 0 (0: none), not {every_n_train_steps!r}"
            )
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST, save_top_k=1,
                         enable_version_counter=False)  # fmt: skip
        self.every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                           *args: Any) -> None:  # fmt: skip
        every = self.every_n_train_steps
        if (
            every
            and trainer.global_step % every == 0
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def wrote_at(self, trainer: Trainer) -> Path | None:
        """The checkpoint it wrote at the trainer's current step, if it did."""
        saved = self._last_global_step_saved == trainer.global_step and self.best_model_path
        return Path(self.best_model_path).resolve() if saved else None


class FitState(Callback):
    """Keeps in every checkpoint what Lightning leaves out of it and a resumed run needs to
    end as the uninterrupted one: the metrics so far (``trainer.callback_metrics``) and
    whether fitting was told to stop (early stopping's decision).

    A run resumed from the checkpoint of its last epoch's end (stopped in its test phase)
    has nothing left to fit: it stops again at once, and ``final_metrics`` are the
    checkpoint's, not the empty ones of a process that ran no epoch. ``LastCheckpoint``
    saves after early stopping has decided and the epoch's metrics are logged (Lightning
    runs checkpoint callbacks last).
    """

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._restored: dict[str, float] = {}
        self._should_stop = False
        self._epoch_ended = False  # in this process

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_stop:  # Lightning does not keep it: the resumed run would go on
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_ended = True

    def final_metrics(self) -> dict[str, float]:
        """The fit's metrics: this process's, or, where no epoch ended in it, the checkpoint's."""
        if not self._epoch_ended and self._restored:
            return dict(self._restored)
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}
        return {name: float(value) for name, value in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        stop = self._trainer is not None and bool(self._trainer.should_stop)
        return {"metrics": self.final_metrics(), "should_stop": stop}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = {name: float(value) for name, value in state_dict["metrics"].items()}
        self._should_stop = bool(state_dict["should_stop"])


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


@contextmanager
def _counted_as_ending(trainer: Trainer) -> Iterator[None]:
    """Inside the block, an epoch that has ended is counted as ending, as it is where a
    checkpoint callback saves an epoch's end (its last hook, ``on_train_epoch_end``).

    Lightning stops for a signal noted in an epoch's last step or its validation only
    after counting the epoch completed; a checkpoint of that state resumes into an empty
    epoch (the data module resumes the next epoch at the position where this one ended).
    Mid-epoch (the epoch's ``ready`` count one ahead of ``completed``) nothing changes.
    """
    progress = trainer.fit_loop.epoch_progress
    ended = 0 < progress.current.completed == progress.current.ready
    if ended:
        progress.current.completed -= 1
        progress.total.completed -= 1
    try:
        yield
    finally:
        if ended:
            progress.current.completed += 1
            progress.total.completed += 1


#: Signals that stop a run cleanly: SIGTERM (schedulers, SLURM, ``timeout``) and SIGINT (Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """A run stopped by a signal; the process should exit with 128 + ``signum``.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except Exception`` on
    the way (Hydra's ``instantiate`` wraps those) takes it for a failure.

    ``checkpoint`` is the resumable checkpoint saved as it stopped (None before training
    started), ``global_step``/``epoch`` where it stopped.
    """

    def __init__(self, signum: int, checkpoint: Path | None, global_step: int, epoch: int) -> None:
        self.signum, self.checkpoint = int(signum), checkpoint
        self.global_step, self.epoch = global_step, epoch
        where = f" at step {global_step} (epoch {epoch})" if checkpoint else ""
        super().__init__(f"stopped by {self.signal_name}{where}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class StopOnSignal(Callback):
    """Stops training at the next step boundary on SIGTERM or SIGINT and saves a resumable
    checkpoint to ``checkpoint`` (the run's ``last.ckpt``).

    SIGTERM is left to Lightning: its signal connector notes it while the Trainer runs, and
    the loops raise ``SIGTERMException`` once the current step is done; this callback saves
    the checkpoint in ``on_exception``. SIGINT is handed to that same handler, so Ctrl-C
    stops the same way. Outside the Trainer (while the data is built, between fit and
    test) a signal interrupts at once: there is nothing to save.

    A validation inside fit is never cut short (a checkpoint taken mid-way cannot be
    resumed: its scores are half an epoch's): a signal during it, or during the training
    step before it, is held until it ends, then handed on, so the run stops with the
    epoch's checkpoints saved. A second signal during that validation stops at once; the
    last saved checkpoint stands. Where ``LastCheckpoint`` has just written ``checkpoint``
    at the step the run stops at (an epoch's end, a step save), that one stands: it is
    the state Lightning resumes from.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.signum: int | None = None
        self.saved: Path | None = None
        self.where = (0, 0)  # global step, epoch
        self._held_handlers: dict[int, Any] | None = None  # while holding signals
        self._pending: int | None = None  # a signal held
        self._noted = False  # whether Lightning had noted it before the validation
        self._pid = os.getpid()  # forked workers inherit the handlers, not the job

    @contextmanager
    def handling_signals(self) -> Iterator[StopOnSignal]:
        """Install the handlers for the ``with`` block (main thread only; signals go there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker (Ctrl-C reaches it too)
            return
        self.signum = self.signum or signum
        lightning = signal.getsignal(signal.SIGTERM)
        if lightning == self._handle:  # no Trainer is running: stop now
            raise RunInterrupted(signum, None, *self.where)
        if signum != signal.SIGTERM and callable(lightning):
            lightning(signal.SIGTERM, frame)  # Lightning's: stop after the current step

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        in_main = threading.current_thread() is threading.main_thread()
        if trainer.state.fn != TrainerFn.FITTING or not in_main:  # sanity check included
            return
        if trainer.received_sigterm:  # came in the step before: Lightning would stop mid-way
            trainer._signal_connector.received_sigterm = False
            self._pending, self._noted = self.signum or signal.SIGTERM, True
        self._held_handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._hold)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        noted = self._noted
        pending = self._restore_handlers()
        if pending is None:
            return
        if noted:
            trainer._signal_connector.received_sigterm = True
            return
        handler = signal.getsignal(pending)
        if callable(handler):  # Lightning's for SIGTERM, ours (passing it on) for SIGINT
            handler(pending, None)

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: its parent stops it
            return
        if self._pending is not None:  # the second: stop now
            raise RunInterrupted(self._pending, None, *self.where)
        self._pending = signum

    def _restore_handlers(self) -> int | None:
        """Reinstall the handlers replaced during a validation; return the signal held."""
        if self._held_handlers is not None:
            for signum, handler in self._held_handlers.items():
                signal.signal(signum, handler)
        self._held_handlers = None
        pending, self._pending, self._noted = self._pending, None, False
        return pending

    def on_exception(self, trainer: Trainer, pl_module: LightningModule,
                     exception: BaseException) -> None:  # fmt: skip
        pending = self._restore_handlers()
        self.signum = self.signum or pending
        if not isinstance(exception, SIGTERMException):
            return
        self.signum = self.signum or signal.SIGTERM
        self.where = (trainer.global_step, trainer.current_epoch)
        if trainer.state.fn != TrainerFn.FITTING:  # testing: the final last.ckpt stands
            self.saved = self.checkpoint if self.checkpoint.is_file() else None
            return
        written = {cb.wrote_at(trainer) for cb in trainer.checkpoint_callbacks
                   if isinstance(cb, LastCheckpoint)}  # fmt: skip
        # Not Lightning's OnExceptionCheckpoint (measured, Lightning 2.6): it saves the state
        # Lightning stops in, the epoch counted completed, which resumes into an empty epoch
        # (tests/test_faults.py: test_without_checkpoint_callbacks_..., test_a_signal_in_the_
        # step_before_a_validation_... and test_a_signal_during_validation_...[SIGTERM] fail
        # with it), and it rewrites last.ckpt where LastCheckpoint just wrote it. It also saves
        # on any exception (a NaN loss would replace the last good checkpoint) and deletes its
        # file when a fit ends normally; ModelCheckpoint(save_on_exception=True) saves on any
        # exception too.
        if self.checkpoint.resolve() not in written:
            with _counted_as_ending(trainer):
                trainer.save_checkpoint(self.checkpoint)
        self.saved = self.checkpoint

    def interrupted_after_fit(self, trainer: Trainer) -> RunInterrupted:
        """The ``RunInterrupted`` of a signal that came as fitting ended, too late to stop
        it: the run resumes from the final ``last.ckpt``, with nothing left to fit."""
        self.where = (trainer.global_step, trainer.current_epoch)
        self.saved = self.checkpoint if self.checkpoint.is_file() else None
        return self.interrupted()

    def interrupted(self) -> RunInterrupted:
        """The ``RunInterrupted`` of the signal received."""
        return RunInterrupted(self.signum or signal.SIGTERM, self.saved, *self.where)
