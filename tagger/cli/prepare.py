"""``tagger prepare mtat|folder|jamendo ...``: decode a dataset once into a clip store.

    tagger prepare mtat --root MTAT --out STORE [--sample-rate 16000|12000]
                        [--tags top50|merged50|FILE]
                        [--split dieleman|coursework|clean:DIR|pons:DIR]
    tagger prepare folder --root DIR --labels FILE --out STORE
                          [--sample-rate HZ] [--clip-seconds S|none]
                          [--max-seconds S] [--min-seconds S]   (with --clip-seconds none)
    tagger prepare jamendo --audio DIR --splits DIR --out STORE [--sample-rate HZ]
                           [--subset top50tags|genre|instrument|moodtheme|all]
                           [--split-index 0-4] [--max-seconds S] [--min-seconds S]
    (all: [--workers N] [--restart] [--truncated keep|skip])

Then train with ``python train.py data=store data.path=STORE``. See docs/data.md.
Exit status: 0 when the store was written; 2 for bad arguments or inputs, or while another
prepare writes the same --out; 1 when the file system fails (full, not writable); 130
when interrupted (Ctrl-C; the same command resumes), 143 when terminated (SIGTERM; the
same). Its decoding processes end with it, however it ends.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from tagger.cli.args import (
    FRACTION,
    JAMENDO_SPLIT,
    SAMPLE_RATE,
    SECONDS,
    SECONDS_OR_ZERO,
    SEED,
    WORKERS,
    number,
    seconds_or_none,
)
from tagger.data.store import META_FILE
from tagger.errors import ConfigError
from tagger.prepare.build import Terminated, available_cores, build_store
from tagger.prepare.folder import folder_plan
from tagger.prepare.jamendo import SUBSETS, jamendo_plan
from tagger.prepare.mtat import mtat_plan
from tagger.prepare.writer import TRUNCATED_POLICIES, StorePlan


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="tagger prepare", description="Decode a dataset into a clip store."
    )
    sources = main.add_subparsers(dest="source", required=True, metavar="SOURCE")

    def common(sub: argparse.ArgumentParser, sample_rate: int, root: bool = True) -> None:
        if root:
            sub.add_argument("--root", type=Path, required=True, help="the dataset's directory")
        sub.add_argument("--out", type=Path, required=True, help="the store directory to write")
        sub.add_argument(
            "--sample-rate", type=number(SAMPLE_RATE), default=sample_rate, help="Hz to store at"
        )
        sub.add_argument(
            "--workers",
            type=number(WORKERS),
            default=available_cores(),
            help="decoding processes (default: every available core)",
        )
        sub.add_argument(
            "--restart",
            action="store_true",
            help="discard an interrupted prepare of --out instead of resuming it",
        )
        sub.add_argument(
            "--truncated",
            choices=TRUNCATED_POLICIES,
            default="keep",
            help="a file that decodes shorter than its header says: keep it (zero-padded, "
            "listed) or skip it (listed); default keep",
        )

    mtat = sources.add_parser("mtat", help="the raw MagnaTagATune release (mp3 + CSV)")
    common(mtat, 16000)
    mtat.add_argument("--tags", default="top50", help="top50, merged50 or a tag-set file")
    mtat.add_argument(
        "--split", default="dieleman", help="dieleman, coursework, clean:DIR or pons:DIR"
    )

    folder = sources.add_parser("folder", help="any folder of audio with a labels CSV")
    common(folder, 16000)
    folder.add_argument("--labels", type=Path, required=True, help="CSV of path,tags[,split]")
    folder.add_argument(
        "--clip-seconds",
        type=seconds_or_none(SECONDS),
        default=29.125,
        help="clip length, s (cropped or zero-padded); none keeps each file whole, at its own "
        "length (a version 2 store)",
    )
    folder.add_argument(
        "--max-seconds",
        type=number(SECONDS),
        default=None,
        help="with --clip-seconds none: keep the middle S seconds of longer files",
    )
    folder.add_argument(
        "--min-seconds",
        type=number(SECONDS_OR_ZERO),
        default=None,
        help="with --clip-seconds none: zero-pad shorter files to S seconds (listed in "
        "meta.json); default: none, every file keeps its real length (training pads a file "
        "shorter than a window up to one window)",
    )
    folder.add_argument(
        "--val-fraction", type=number(FRACTION), default=0.1, help="without a split column"
    )
    folder.add_argument(
        "--test-fraction", type=number(FRACTION), default=0.1, help="without a split column"
    )
    folder.add_argument("--seed", type=number(SEED), default=0, help="seed of the split")

    jamendo = sources.add_parser("jamendo", help="MTG-Jamendo (mp3 tracks + split files)")
    common(jamendo, 16000, root=False)
    jamendo.add_argument("--audio", type=Path, required=True, help="the folder of 00-99")
    jamendo.add_argument(
        "--splits", type=Path, required=True, help="the folder of split-0 ... split-4"
    )
    jamendo.add_argument("--subset", default="top50tags", help=f"tag subset: {', '.join(SUBSETS)}")
    jamendo.add_argument(
        "--split-index", type=number(JAMENDO_SPLIT), default=0, help="split-N to use, 0-4"
    )
    jamendo.add_argument(
        "--max-seconds",
        type=number(SECONDS),
        default=None,
        help="keep the middle S s of longer tracks",
    )
    jamendo.add_argument(
        "--min-seconds",
        type=number(SECONDS_OR_ZERO),
        default=None,
        help="zero-pad shorter tracks to S s (listed); default: none, real lengths kept",
    )
    return main


def plan_from(args: argparse.Namespace) -> StorePlan:
    if args.source == "mtat":
        plan = mtat_plan(args.root, args.sample_rate, args.tags, args.split)
    elif args.source == "jamendo":
        plan = jamendo_plan(
            args.audio,
            args.splits,
            args.sample_rate,
            args.subset,
            args.split_index,
            args.max_seconds,
            args.min_seconds,
        )
    else:
        plan = folder_plan(
            args.root,
            args.labels,
            args.sample_rate,
            args.clip_seconds,
            args.val_fraction,
            args.test_fraction,
            args.seed,
            args.max_seconds,
            args.min_seconds,
        )
    plan.truncated = args.truncated
    return plan


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a directory: one inside a regular file."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"--out {out}: {parent} is a file, not a directory; choose another --out"
                )
            return


def run(args: argparse.Namespace) -> Path:
    """Build the store ``args`` describe and print what it holds; returns its path."""
    check_out(args.out)
    plan = plan_from(args)
    out = build_store(plan, args.out, workers=args.workers, restart=args.restart)
    meta = json.loads((out / META_FILE).read_text())
    print(f"wrote {out}: {meta['clips']} clips {meta['counts']}, tags {meta['tag_set']}")
    for reason, count in meta["dropped"].items():
        if count:
            print(f"dropped {count} clip(s): {reason.replace('_', ' ')}")
    for skip in meta["skipped"]:
        print(f"skipped {skip['path']}: {skip['reason']}")
    how = "zero-padded" if meta["clip_samples"] else "as decoded"
    for kept in meta["truncated"]:
        print(f"kept {kept['path']}, {how}: {kept['reason']} (--truncated skip drops it)")
    padded = meta["padded"]
    if padded["count"] and meta["clip_samples"]:  # clips of one length (format version 1)
        print(
            f"zero-padded {padded['count']} of {meta['clips']} file(s) shorter than the clip "
            f"length, {meta['clip_seconds']:g} s, to it (listed under padded in meta.json); "
            "--clip-seconds none keeps each file at its real length"
        )
    elif padded["count"]:  # tracks (format version 2) shorter than --min-seconds
        print(
            f"zero-padded {padded['count']} track(s) shorter than {meta['min_samples']} samples "
            "to that length (listed under padded in meta.json)"
        )
    lengths, rate = meta.get("track_samples"), meta["sample_rate"]
    if lengths and meta["clips"]:
        real = ", each at its real length" if not padded["count"] else ""
        print(f"stored tracks of {lengths['min'] / rate:.2f} to {lengths['max'] / rate:.2f} s "
              f"(mean {lengths['mean'] / rate:.2f} s){real}")  # fmt: skip
    return out


def prepare(argv: list[str]) -> Path:
    """Run ``tagger prepare`` with ``argv`` (e.g. ``["mtat", "--root", ...]``); the store path."""
    return run(parser().parse_args(argv))


def os_error_line(error: OSError, out: Path) -> str:
    """One line for a failed file operation of a prepare writing ``out``: what and what to do."""
    if error.errno == errno.ENOSPC:
        hint = "free space, then run the same command again to resume"
    else:
        hint = "choose an --out in a directory you can write"
    return f"{error.filename or out}: {error.strerror or error} (writing --out {out}); {hint}"


def main() -> None:
    args = parser().parse_args(sys.argv[1:])
    try:
        run(args)
    except ConfigError as error:
        for line in str(error).splitlines():  # one line per offending row or file
            print(f"tagger: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"tagger: error: {os_error_line(error, args.out)}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt as error:  # Ctrl-C or SIGINT; SIGTERM: Terminated
        print("tagger: interrupted; run the same command again to resume", file=sys.stderr)
        raise SystemExit(143 if isinstance(error, Terminated) else 130) from None


if __name__ == "__main__":
    main()
