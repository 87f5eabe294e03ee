"""Per-step logging: the ``StepLog`` callback vs ``self.log`` in ``training_step``.

    python benchmarks/step_log_bench.py [--steps 300] [--rounds 4] [--batch-size 2]

Trains ``baseline`` 256/256 on the built-in data with small batches of short clips (2 x 4,096
samples; where the per-step bookkeeping weighs most) through ``train.py``'s own trainer and loggers
(TensorBoard + CSV, ``log_every_n_steps=1``), without validation, checkpoints or a
progress bar, two ways:

- ``StepLog``: the default, ``conf/callbacks/step_log.yaml`` (loss and step time of every
  step, handed to the loggers 50 steps at a time);
- ``self.log``: no ``StepLog``; ``training_step`` calls
  ``self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)``.

A step's time is the wall time from one ``on_train_batch_start`` to the next; each run's
figure is the median over its steps after the first 20. The two ways alternate for
``--rounds`` rounds in one process, so a burst of load from elsewhere spoils one run, not
one way. Prints one line per run and the median difference.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning import Callback
from torch import Tensor

from tagger.cli.hydra_setup import compose_run_config
from tagger.module import TaggingModule, build_module

WARMUP = 20  # steps left out of each run's median


class SelfLogged(TaggingModule):
    """The module with Lightning's per-step ``self.log`` of the training loss."""

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["labels"]))  # fmt: skip
        return loss


class StepStarts(Callback):
    """Wall-clock times (s) of every training step's start."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def median_ms(self) -> float:
        """Median step time, ms, after the warm-up steps."""
        times = self.starts[WARMUP:]
        return 1000 * statistics.median(b - a for a, b in itertools.pairwise(times))


def run(way: str, args: argparse.Namespace, out: Path) -> float:
    """Train ``args.steps`` steps one way; its median step time, ms."""
    overrides = [
        f"data.batch_size={args.batch_size}", "data.train_clips=400", "data.val_clips=20",
        "data.n_subclips=2", "data.subclip_len=4096",
        "data.test_clips=20", f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
        "+trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
    ]  # fmt: skip
    cfg = compose_run_config("train", out / way, overrides)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.tag_names)
    callbacks: list[Callback] = [timer := StepStarts()]
    if way == "StepLog":
        callbacks.append(instantiate(cfg.callbacks.step_log))
    else:
        module = SelfLogged(**module.hparams)
    loggers = [instantiate(node) for node in cfg.logger.values()]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks,
                                     enable_checkpointing=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return timer.median_ms()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each way, alternating")
    parser.add_argument("--batch-size", type=int, default=2, help="clips per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    times: dict[str, list[float]] = {"StepLog": [], "self.log": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            ways = list(times) if round_ % 2 == 0 else list(times)[::-1]
            for way in ways:
                times[way].append(run(way, args, Path(tmp) / f"round{round_}"))
                print(f"round {round_ + 1}: {way:8s} {times[way][-1]:7.2f} ms/step", flush=True)
    diffs = [b - a for a, b in zip(times["StepLog"], times["self.log"], strict=True)]
    medians = {way: statistics.median(ms) for way, ms in times.items()}
    print(f"median ms/step: StepLog {medians['StepLog']:.2f}, self.log {medians['self.log']:.2f}")
    print(f"self.log - StepLog, ms/step, per round: {', '.join(f'{d:+.2f}' for d in diffs)} "
          f"(median {statistics.median(diffs):+.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
