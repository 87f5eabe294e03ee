"""``tagger prepare mtat|folder ...``: decode a dataset once into a clip store for training.

    tagger prepare mtat --root MTAT --out STORE [--sample-rate 16000|12000]
                        [--tags top50|merged50|FILE] [--split dieleman|coursework|clean:DIR]
    tagger prepare folder --root DIR --labels FILE --out STORE
                          [--sample-rate HZ] [--clip-seconds S]

Then train with ``python train.py data=store data.path=STORE``. See docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tagger.config import ConfigError
from tagger.data.build import available_cores, build_store
from tagger.data.folder import folder_plan
from tagger.data.mtat import mtat_plan
from tagger.data.store import META_FILE, StorePlan, discard_partial, partial_dir


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="tagger prepare", description="Decode a dataset into a clip store."
    )
    sources = main.add_subparsers(dest="source", required=True, metavar="SOURCE")

    def common(sub: argparse.ArgumentParser, sample_rate: int) -> None:
        sub.add_argument("--root", type=Path, required=True, help="the dataset's directory")
        sub.add_argument("--out", type=Path, required=True, help="the store directory to write")
        sub.add_argument("--sample-rate", type=int, default=sample_rate, help="Hz to store at")
        sub.add_argument(
            "--workers",
            type=int,
            default=available_cores(),
            help="decoding processes (default: every available core)",
        )
        sub.add_argument(
            "--restart",
            action="store_true",
            help="discard an interrupted prepare of --out instead of resuming it",
        )

    mtat = sources.add_parser("mtat", help="the raw MagnaTagATune release (mp3 + CSV)")
    common(mtat, 16000)
    mtat.add_argument("--tags", default="top50", help="top50, merged50 or a tag-set file")
    mtat.add_argument("--split", default="dieleman", help="dieleman, coursework or clean:DIR")

    folder = sources.add_parser("folder", help="any folder of audio with a labels CSV")
    common(folder, 16000)
    folder.add_argument("--labels", type=Path, required=True, help="CSV of path,tags[,split]")
    folder.add_argument("--clip-seconds", type=float, default=29.125, help="clip length, s")
    folder.add_argument("--val-fraction", type=float, default=0.1, help="without a split column")
    folder.add_argument("--test-fraction", type=float, default=0.1, help="without a split column")
    folder.add_argument("--seed", type=int, default=0, help="seed of the split")
    return main


def plan_from(args: argparse.Namespace) -> StorePlan:
    if args.source == "mtat":
        return mtat_plan(args.root, args.sample_rate, args.tags, args.split)
    return folder_plan(
        args.root,
        args.labels,
        args.sample_rate,
        args.clip_seconds,
        args.val_fraction,
        args.test_fraction,
        args.seed,
    )


def prepare(argv: list[str]) -> Path:
    """Run ``tagger prepare`` with ``argv`` (e.g. ``["mtat", "--root", ...]``); the store path."""
    args = parser().parse_args(argv)
    plan = plan_from(args)
    if args.restart:
        discard_partial(args.out)
    elif partial_dir(args.out).is_dir() and not (args.out / META_FILE).exists():
        print(f"resuming the interrupted prepare in {partial_dir(args.out)}", file=sys.stderr)
    out = build_store(plan, args.out, workers=args.workers)
    meta = json.loads((out / META_FILE).read_text())
    print(f"wrote {out}: {meta['clips']} clips {meta['counts']}, tags {meta['tag_set']}")
    for reason, count in meta["dropped"].items():
        if count:
            print(f"dropped {count} clip(s): {reason.replace('_', ' ')}")
    for skip in meta["skipped"]:
        print(f"skipped {skip['path']}: {skip['reason']}")
    return out


def main() -> None:
    try:
        prepare(sys.argv[1:])
    except ConfigError as error:
        print(f"tagger: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
