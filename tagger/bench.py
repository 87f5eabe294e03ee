"""Training throughput three ways, in one process so their ratios hold on a noisy machine.

(a) ``step``: the model's training step alone (forward, loss, backward, optimizer step)
    on batches already in memory on the device, as the data module delivers them
    (a few distinct batches in turn): the limit set by the arithmetic.
(b) ``framework``: the full training loop, Lightning ``Trainer`` over ``StoreDataModule``,
    configured as ``train.py`` configures it (loggers, progress bar, step log, the
    ``augment=`` augmentation; no validation).
(c) ``coursework``: a ``Dataset`` over one float32 ``.npy`` file per clip, ``DataLoader``
    batches of 10, and the same step as (a) in a plain loop.

All three time the same number of batches after a warm-up, excluding start-up, and
``bench_rounds`` runs them in turn several times: a burst of load from elsewhere then
spoils one round, not one way, and the median round shows the steady ratios.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from tagger.aggregation import clip_loss
from tagger.augment import augment_callbacks
from tagger.data.coursework import CLIP_SAMPLES
from tagger.module import TaggingModule, build_module
from tagger.prepare.writer import StoreClip, StorePlan, StoreWriter
from tagger.train import instantiate_all

#: clips in an MTAT training epoch (the coursework split)
MTAT_EPOCH_CLIPS = 16_963
SAMPLE_RATE = 12_000
NUM_TAGS = 50
VAL_CLIPS = 10
#: callbacks of conf/callbacks/default.yaml that need validation, which (b) leaves out
NEEDS_VAL = ("early_stopping", "model_checkpoint")


@dataclass
class Throughput:
    """One way of training: clips per second and the peak memory after it, in MiB."""

    name: str
    clips_per_s: float
    peak_mib: float

    @property
    def epoch_s(self) -> float:
        """Seconds per MTAT-sized training epoch at this rate."""
        return MTAT_EPOCH_CLIPS / self.clips_per_s


def write_clips(directory: Path, n_clips: int) -> Path:
    """``n_clips`` random MTAT-sized clips (349,500 int16-scale samples, 29.1 s at 12 kHz) as
    a store ``directory/store`` and as float32 files ``directory/npy/*.npy``. The last
    ``VAL_CLIPS`` are the store's val split. Returns the store's path."""
    rng = np.random.default_rng(0)
    labels = (rng.random((n_clips, NUM_TAGS)) < 0.1).astype(np.uint8)
    names = [f"clip_{i:05d}.npy" for i in range(n_clips)]
    clips = [
        StoreClip(name, Path(name), name, "val" if i >= n_clips - VAL_CLIPS else "train", labels[i])
        for i, name in enumerate(names)
    ]
    plan = StorePlan(
        clips,
        [f"tag{k}" for k in range(NUM_TAGS)],
        SAMPLE_RATE,
        CLIP_SAMPLES,
        {"source": "bench"},
    )
    writer = StoreWriter(directory / "store", plan)
    (directory / "npy").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        clip = rng.integers(-20_000, 20_000, CLIP_SAMPLES, dtype=np.int16)
        writer.add(i, clip)
        np.save(directory / "npy" / name, clip.astype(np.float32))
    np.save(directory / "labels.npy", labels)
    return writer.finish()


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_function(module: TaggingModule, bf16: bool = False) -> Callable[[Tensor, Tensor], None]:
    """One plain training step: audio [B, n_subclips, 1, T] and labels [B, K] on the device;
    with ``bf16`` the forward runs under bfloat16 autocast, as ``trainer.precision=bf16-mixed``."""
    optimizer = module.configure_optimizers()["optimizer"]
    aggregation = module.hparams.aggregation
    device_type = next(module.parameters()).device.type

    def step(audio: Tensor, labels: Tensor) -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = clip_loss(module(audio), labels, aggregation)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_batches(batches: Any, step: Callable[..., None], warmup: int, steps: int,
                 device: torch.device) -> float:  # fmt: skip
    """Seconds for ``steps`` calls of ``step`` on ``batches`` after ``warmup`` untimed ones."""
    iterator = iter(batches)
    for _ in range(warmup):
        step(*next(iterator))
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(*next(iterator))
    _sync(device)
    return time.perf_counter() - started


class _StepClock(Callback):
    """Times ``steps`` whole training cycles from the start of step ``warmup`` to the start
    of step ``warmup + steps``: each step with its batch loading and Lightning's work
    between steps, nothing of the run's start or end."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup = warmup
        self.steps = steps
        self.device = device
        self.started = 0.0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, *_: Any) -> None:
        if trainer.global_step == self.warmup:
            _sync(self.device)
            self.started = time.perf_counter()
        elif trainer.global_step == self.warmup + self.steps:
            _sync(self.device)
            self.seconds = time.perf_counter() - self.started


def bench_step(cfg: DictConfig, device: torch.device, warmup: int, steps: int,
               distinct: int = 8) -> Throughput:  # fmt: skip
    """(a): ``distinct`` training batches, loaded onto the device beforehand, in turn."""
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.tag_names).to(device).train()
    datamodule.setup()
    loaded = []
    for batch in datamodule.train_dataloader():
        loaded.append((batch["audio"].to(device), batch["labels"].to(device)))
        if len(loaded) == distinct:
            break
    seconds = time_batches(
        itertools.cycle(loaded), step_function(module, _bf16(cfg)), warmup, steps, device
    )
    clips = steps * len(loaded[0][1])
    return Throughput("(a) model step alone", clips / seconds, _peak_mib(device))


def bench_framework(cfg: DictConfig, device: torch.device, warmup: int, steps: int) -> Throughput:
    """(b): ``Trainer.fit`` over the store as ``train.py`` runs it, ``steps`` cycles timed."""
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.tag_names)
    clock = _StepClock(warmup, steps, device)
    callbacks = {k: v for k, v in (cfg.get("callbacks") or {}).items() if k not in NEEDS_VAL}
    trainer: Trainer = instantiate(
        cfg.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        max_steps=warmup + steps + 1,  # the clock stops as the last step starts
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        callbacks=[*instantiate_all(callbacks), *augment_callbacks(cfg), clock],
        logger=instantiate_all(cfg.get("logger")) or False,
    )
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        trainer.fit(module, datamodule=datamodule)  # the progress bar runs, unseen
    batch = cfg.data.batch_size
    return Throughput("(b) framework loop", steps * batch / clock.seconds, _peak_mib(device))


class CourseworkClips(Dataset):
    """The coursework's data: one float32 ``.npy`` per clip, each item loaded from its file
    and cut into windows: (audio [n_subclips, 1, subclip_len], labels [num_tags])."""

    def __init__(self, paths: list[Path], labels: np.ndarray, n_subclips: int,
                 subclip_len: int) -> None:  # fmt: skip
        self.paths = paths
        self.labels = labels.astype(np.float32)
        self.windows = (n_subclips, 1, subclip_len)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        audio = np.load(self.paths[index])[: int(np.prod(self.windows))].reshape(self.windows)
        return torch.from_numpy(audio), torch.from_numpy(self.labels[index])


def bench_coursework(cfg: DictConfig, npy_dir: Path, device: torch.device, warmup: int,
                     steps: int) -> Throughput:  # fmt: skip
    """(c): ``CourseworkClips`` in shuffled ``DataLoader`` batches of 10 (default collate)."""
    paths = sorted(npy_dir.glob("*.npy"))
    labels = np.load(npy_dir.parent / "labels.npy")
    dataset = CourseworkClips(paths, labels, cfg.data.n_subclips, cfg.data.subclip_len)
    loader = DataLoader(dataset, batch_size=10, sampler=RandomSampler(dataset))
    module = build_module(cfg, [f"tag{k}" for k in range(labels.shape[1])]).to(device).train()
    step = step_function(module, _bf16(cfg))

    def moved() -> Any:  # epoch after epoch, as many batches as asked for
        while True:
            for audio, labels in loader:
                yield audio.to(device), labels.to(device)

    seconds = time_batches(moved(), step, warmup, steps, device)
    return Throughput("(c) coursework loop", steps * 10 / seconds, _peak_mib(device))


def bench_rounds(cfg: DictConfig, npy_dir: Path, device: torch.device, warmup: int,
                 steps: int, rounds: int) -> list[list[Throughput]]:  # fmt: skip
    """(a), (b) and (c) in turn, ``rounds`` times, each from the run's seed: [round][way]."""
    ways: list[Callable[[], Throughput]] = [
        lambda: bench_step(cfg, device, warmup, steps),
        lambda: bench_framework(cfg, device, warmup, steps),
        lambda: bench_coursework(cfg, npy_dir, device, warmup, steps),
    ]
    results = []
    for _ in range(rounds):
        round_results = []
        for way in ways:
            L.seed_everything(cfg.seed, verbose=False)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            round_results.append(way())
        results.append(round_results)
    return results


def median_throughputs(results: list[list[Throughput]]) -> list[Throughput]:
    """Per way, the median clips/s over rounds and the lowest peak memory: on a GPU the
    way's own peak (reset before each way), on CPU the process's peak RSS so far, which
    only grows, so its first-round value."""
    return [
        Throughput(
            way[0].name,
            statistics.median(r.clips_per_s for r in way),
            min(r.peak_mib for r in way),
        )
        for way in zip(*results, strict=True)
    ]


def _bf16(cfg: DictConfig) -> bool:
    """Whether the run trains under bfloat16 autocast (``trainer.precision=bf16-mixed``)."""
    return str(cfg.trainer.get("precision")).startswith("bf16")
