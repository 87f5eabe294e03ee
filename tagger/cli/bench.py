"""``tagger bench``: training throughput of a model three ways, and their ratios.

    tagger bench [--model baseline] [--stride 256] [--device cpu|cuda] [--clips 2000]
                 [--store STORE] [--steps 100] [--warmup 10] [--rounds 5] [--dir DIR]
                 [--json FILE] [overrides ...]

Writes ``--clips`` random MTAT-sized clips (29.1 s at 12 kHz) as a clip store and as
float32 .npy files in a temporary folder (deleted afterwards), or reads ``--store`` and
writes only the .npy copies, then prints clips/s, seconds per MTAT-sized epoch (16,963
clips) and peak memory for (a) the model step alone, (b) the framework's training loop
and (c) the coursework's loop: the median of ``--rounds`` rounds of all three in turn,
and the ratios of each round. Extra arguments are ``train.py`` overrides, e.g.
``data.batch_size=64``, ``data.num_workers=1`` or ``augment=standard`` (applied in (b),
as ``train.py`` applies it). ``--json FILE`` also writes the medians and the median ratios
as JSON (``summary``), for scripts such as benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from tagger.bench import (
    MTAT_EPOCH_CLIPS,
    VAL_CLIPS,
    Throughput,
    bench_rounds,
    median_throughputs,
    write_clips,
)
from tagger.cli.args import number
from tagger.cli.hydra_setup import compose_run_config, exit_on_config_error
from tagger.data.store import META_FILE, ClipStore
from tagger.run_files import write_json
from tagger.settings import Spec, check_settings


def bench_config(store: Path, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The ``train.py`` config for training on ``store``, as Hydra composes it, its
    settings checked (``check_settings``)."""
    cfg = compose_run_config("train", run_dir, ["data=store", f"data.path={store}", *overrides])
    check_settings(cfg)
    return cfg


#: What the flags take: clips to write (at least the val split and 10 more), batches, rounds.
CLIPS = Spec("int", VAL_CLIPS + 10, 10_000_000, unit=" (clips)")
STEPS = Spec("int", 1, 1_000_000, unit=" (batches)")
WARMUP = Spec("int", 0, 1_000_000, unit=" (batches)")
ROUNDS = Spec("int", 1, 10_000, unit=" (rounds)")
STRIDE = Spec("int", 1, 10_000_000, unit=" (samples)")


def device(text: str) -> str:
    """An argparse type: a torch device this machine has (cpu, cuda, cuda:N), else one line."""
    try:
        kind = torch.device(text).type
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, not {text!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here (use cpu)")
    if kind not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, not {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="tagger bench", description=__doc__.split("\n\n")[0])
    main.add_argument("--model", default="baseline", help="a conf/model name")
    main.add_argument("--stride", type=number(STRIDE), default=256,
                      help="first-layer stride = length")  # fmt: skip
    main.add_argument("--device", type=device,
                      default="cuda" if torch.cuda.is_available() else "cpu",
                      help="cpu, cuda or cuda:N (default: cuda when there is one)")  # fmt: skip
    main.add_argument("--clips", type=number(CLIPS), default=2000,
                      help="clips to generate (the last 10 are the val split)")  # fmt: skip
    main.add_argument("--store", type=Path, help="an existing store instead of generated clips")
    main.add_argument("--steps", type=number(STEPS), default=100,
                      help="timed batches per way and round")  # fmt: skip
    main.add_argument("--warmup", type=number(WARMUP),
                      default=10, help="untimed batches first")  # fmt: skip
    main.add_argument("--rounds", type=number(ROUNDS), default=5,
                      help="rounds of (a), (b), (c) in turn")  # fmt: skip
    main.add_argument(
        "--dir", type=Path, help="keep the clips here, for the next run (default: a temp dir)"
    )
    main.add_argument("--json", type=Path, metavar="FILE",
                      help="also write the medians and median ratios here, as JSON")  # fmt: skip
    main.add_argument("overrides", nargs="*", help="train.py overrides")
    return main


def _npy_copies(clips: ClipStore, out: Path, n_clips: int) -> None:
    """The first ``n_clips`` clips of a store as float32 .npy files (for the coursework way)."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n_clips):
        np.save(out / f"clip_{i:05d}.npy", np.asarray(clips.audio[i], np.float32))
    np.save(out.parent / "labels.npy", clips.labels[:n_clips])


def _ratios(step: Throughput, framework: Throughput, coursework: Throughput) -> tuple[float, ...]:
    """(b)/(a), (c)/(a) and (b)/(c) of one round."""
    return (
        framework.clips_per_s / step.clips_per_s,
        coursework.clips_per_s / step.clips_per_s,
        framework.clips_per_s / coursework.clips_per_s,
    )


def report(results: list[list[Throughput]]) -> str:
    """The median table, then the ratios of every round and their medians, as printed."""
    lines = [f"{'median of ' + str(len(results)) + ' rounds':<24}"
             f"{'clips/s':>10}{'s/epoch':>10}{'peak MiB':>10}"]  # fmt: skip
    lines += [
        f"{r.name:<24}{r.clips_per_s:>10.1f}{r.epoch_s:>10.1f}{r.peak_mib:>10.0f}"
        for r in median_throughputs(results)
    ]
    ratios = [_ratios(*round_results) for round_results in results]
    lines.append(f"{'round':<8}{'(b)/(a)':>10}{'(c)/(a)':>10}{'(b)/(c)':>10}")
    for i, (ba, ca, bc) in enumerate(ratios, 1):
        lines.append(f"{i:<8}{ba:>10.0%}{ca:>10.0%}{bc:>9.2f}x")
    ba, ca, bc = (statistics.median(column) for column in zip(*ratios, strict=True))
    lines += [
        f"{'median':<8}{ba:>10.0%}{ca:>10.0%}{bc:>9.2f}x",
        f"(s/epoch: an MTAT-sized epoch of {MTAT_EPOCH_CLIPS:,} clips)",
    ]
    return "\n".join(lines)


def summary(results: list[list[Throughput]]) -> dict[str, object]:
    """``report``'s medians as data: per way its name, clips/s, s/epoch and peak MiB, and
    the median over rounds of (b)/(a), (c)/(a) and (b)/(c)."""
    ratios = zip(*(_ratios(*round_results) for round_results in results), strict=True)
    return {
        "rounds": len(results),
        "ways": [{**asdict(r), "epoch_s": r.epoch_s} for r in median_throughputs(results)],
        "median_ratios": dict(
            zip(("b/a", "c/a", "b/c"), map(statistics.median, ratios), strict=True)
        ),
    }


def main() -> None:
    args = parser().parse_args()
    logging.getLogger("lightning").setLevel(logging.WARNING)
    device = torch.device(args.device)
    work = args.dir or Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    try:
        overrides = [f"model={args.model}", f"stride={args.stride}", "data.n_subclips=10",
                     *args.overrides]  # fmt: skip
        given = ClipStore(args.store) if args.store else None
        store = given.path if given else work / "store"
        # the config first, so a bad override fails before any clip is written
        cfg = bench_config(store, work / "run", overrides)
        if given:
            needed = min((args.warmup + args.steps) * 10, given.audio.shape[0])
            _npy_copies(given, work / "npy", needed)
        elif not (store / META_FILE).is_file():  # else the clips of an earlier run in --dir
            write_clips(work, args.clips)
        print(f"{args.model} {args.stride}/{args.stride}, batch {cfg.data.batch_size}, "
              f"{args.rounds} rounds of {args.steps} timed steps, device {device}, "
              f"store {store}")  # fmt: skip
        results = bench_rounds(cfg, work / "npy", device, args.warmup, args.steps, args.rounds)
        print(report(results))
        if args.json:
            write_json(args.json, summary(results))
    except Exception as error:  # a bad --store or override: one line, no traceback
        exit_on_config_error(error)
        raise
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
