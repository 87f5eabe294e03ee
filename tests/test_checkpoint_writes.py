"""Nothing half-written looks valid: a checkpoint write that fails (a full disk) leaves the
previous file whole and no temporary, ends the run in one line, and ``ckpt_path=auto``
resumes; an unreadable ``last.ckpt`` is skipped for the newest readable checkpoint."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import Callback, LightningModule, Trainer

from tagger.checkpoint_io import read_checkpoint
from tagger.cli.train import hydra_main
from tagger.train import train

#: Set by ``DiskFullFrom``: from then on, checkpoint temporaries cannot be written whole.
DISK_FULL = {"on": False}


class DiskFullFrom(Callback):
    """Makes the disk "full" for checkpoints once training step ``step`` has run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        DISK_FULL["on"] = trainer.global_step >= self.step


class HalfWritten:
    """A file that takes half of the first write, then fails as a full disk does."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> HalfWritten:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoint temporaries (``.NAME.ckpt.tmp-PID``) are cut short once ``DISK_FULL`` is on."""
    real_open = pathlib.Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(self, mode, *args, **kwargs)
        if DISK_FULL["on"] and ".ckpt.tmp-" in self.name and "w" in mode:
            return HalfWritten(file)
        return file

    monkeypatch.setattr(pathlib.Path, "open", open_)
    DISK_FULL["on"] = False
    yield
    DISK_FULL["on"] = False


def test_a_full_disk_keeps_the_previous_checkpoint_and_auto_resumes(
    train_config, full_disk, capsys: pytest.CaptureFixture
) -> None:
    # 6 steps per epoch; last.ckpt every 2 steps and at the epoch's end; full from step 8
    steps = ["trainer.max_epochs=2", "callbacks.step_checkpoint.every_n_train_steps=2"]
    full = [f"+callbacks.full._target_={__name__}.DiskFullFrom", "+callbacks.full.step=8"]
    cfg = train_config(*steps, "ckpt_path=auto", *full)
    with pytest.raises(SystemExit) as exit_info:
        hydra_main(cfg)
    assert exit_info.value.code == 1  # the file system failed

    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    last = checkpoints / "last.ckpt"
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tagger")]
    assert line == (
        f"tagger: error: cannot write {last}: no space left on the device (the previous "
        "checkpoint is kept); free space on that file system or write elsewhere"
    )
    assert read_checkpoint(last)["global_step"] == 6  # the end of epoch 0, before the disk filled
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("epoch")) == [
        "last.ckpt"
    ]  # no temporaries
    for path in checkpoints.iterdir():
        read_checkpoint(path)  # every file with a checkpoint's name is whole
    recorded = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert recorded["status"] == "failed" and "no space left" in recorded["error"]

    DISK_FULL["on"] = False  # space freed: the same command resumes and finishes
    resumed = train(train_config(*steps, "ckpt_path=auto"))
    assert resumed["status"] == "completed" and resumed["global_step"] == 12
    assert read_checkpoint(last)["global_step"] == 12


def test_auto_skips_an_unreadable_last_checkpoint(train_config, caplog) -> None:
    first = train(train_config("test=false"))  # one epoch: last.ckpt and the best, epoch000-...
    last, best = Path(first["checkpoints"]["last"]), Path(first["checkpoints"]["best"])
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as a crash mid-copy leaves it

    with caplog.at_level(logging.WARNING):
        resumed = train(train_config("test=false", "trainer.max_epochs=2", "ckpt_path=auto"))
    assert f"ckpt_path=auto: skipping checkpoint {last} cannot be read" in caplog.text
    assert resumed["config"]["ckpt_path"] == str(best)
    assert resumed["epochs"] == 2 and resumed["global_step"] == 12
    assert torch.load(last, weights_only=True)["global_step"] == 12  # rewritten whole


def test_a_full_disk_for_metrics_json_ends_in_one_line_and_leaves_no_temporary(
    train_config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_write_text = pathlib.Path.write_text

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if self.name.startswith(".metrics.json.tmp-"):
            real_write_text(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    cfg = train_config("test=false")
    with pytest.raises(SystemExit) as exit_info:
        hydra_main(cfg)
    assert exit_info.value.code == 1  # the file system failed
    run_dir = Path(cfg.paths.output_dir)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tagger")]
    assert line.startswith(f"tagger: error: cannot write {run_dir / 'metrics.json'}: no space left")
    assert not list(run_dir.glob(".*.tmp-*")) and not (run_dir / "metrics.json").exists()
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6  # kept
