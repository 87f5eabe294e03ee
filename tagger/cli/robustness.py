"""``tagger robustness CKPT [--split auto|test|val] [--out DIR] [--device cpu|cuda] ...``.

Scores a checkpoint on its data's split, clean and under each perturbation family at
several strengths (``tagger.robustness``), prints the table and writes
``robustness.csv``, ``robustness.md`` and ``robustness.png``. Exit status 2 for a bad
checkpoint, split or argument.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from tagger.cli.args import BATCH, SEED, number
from tagger.cli.trust import add_trust_option, trusted
from tagger.errors import ConfigError
from tagger.robustness import FAMILIES, robustness, write_robustness

#: The option that sets each family's strengths.
STRENGTH_OPTIONS = {"time_stretch": "rates", "pitch_shift": "semitones", "gain": "gains",
                    "noise": "snrs"}  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tagger robustness",
        description="Macro ROC-AUC and PR-AUC of a checkpoint on its own data's split, clean "
        "and with the audio time-stretched, pitch-shifted, louder or quieter, or noisy.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by train.py")
    parser.add_argument("--split", choices=("auto", "test", "val"), default="auto",
                        help="auto (default): test if the data has one, else val")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="where to write (default: outputs/robustness/<date>_<time>)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
        metavar="FAMILY", help=f"any of {', '.join(FAMILIES)} (default: all)",
    )  # fmt: skip
    for family, option in STRENGTH_OPTIONS.items():
        title, unit, defaults = (FAMILIES[family].title, FAMILIES[family].unit,
                                 FAMILIES[family].strengths)  # fmt: skip
        parser.add_argument(
            f"--{option}", nargs="+", type=number(FAMILIES[family].limits),
            default=list(defaults), metavar="X",
            help=f"{title} strengths, {unit} (default {' '.join(f'{s:g}' for s in defaults)})",
        )  # fmt: skip
    parser.add_argument("--batch-size", type=number(BATCH),
                        help="clips per batch (default: the run's)")  # fmt: skip
    parser.add_argument("--seed", type=number(SEED), default=0,
                        help="the noise generator's seed")  # fmt: skip
    add_trust_option(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here (leave --device at cpu)")
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    strengths = {family: getattr(args, STRENGTH_OPTIONS[family]) for family in args.families}
    out = args.out or Path("outputs", "robustness", time.strftime("%Y-%m-%d_%H-%M-%S"))
    overrides = {} if args.batch_size is None else {"batch_size": args.batch_size}
    try:
        result = robustness(args.checkpoint, args.split, strengths, args.device, overrides,
                            args.seed, trusted_modules=trusted(args))  # fmt: skip
        csv_file, markdown, figure = write_robustness(result, out)
    except ConfigError as error:
        print(f"tagger robustness: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown.read_text(), end="")
    print(f"\nwritten to {csv_file}, {markdown} and {figure}")
