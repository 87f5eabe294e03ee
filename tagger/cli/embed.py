"""``tagger embed CKPT FILE_OR_DIR... --out FILE [--per-window [--hop SECONDS]] [--device cpu]``
or ``tagger embed CKPT --store STORE --split SPLIT --out FILE [...]``.

Writes ``FILE.npy``, float32 [rows, D], one vector per input (the mean of its windows'
vectors from the layer before the network's output layer: ``tagger.embed``) or, with
``--per-window``, one per window; and ``FILE.csv``, which names each row's input (a file
as given, or a store clip's id with its source path and tags) and, per window, its start
in seconds. The inputs and their windows are ``tagger predict``'s: folders are searched
recursively for audio files; a store's clips of the split are taken whole.
Files that cannot be decoded or hold NaN or infinite samples, and inputs the model gives
non-finite values for, are named on stderr and skipped. Exit status: 0 when every input
was embedded, 1 when some were skipped (or nothing could be written), 2 when the arguments,
the checkpoint or the store are wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import torch
from tqdm import tqdm

from tagger.cli.args import SECONDS, number
from tagger.cli.trust import add_trust_option, trusted
from tagger.data.store import ClipStore
from tagger.embed import Embedder, Embedding, output_paths, store_rows, write_embeddings
from tagger.errors import ConfigError
from tagger.predict import AUDIO_SUFFIXES, audio_files
from tagger.prepare.audio import AudioError

PROG = "tagger embed"
#: Seconds before the progress bar shows: a short run prints none.
PROGRESS_DELAY_S = 2.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Embed audio files, or the clips of a prepared store, with a trained "
        "checkpoint: the vector the network's output layer reads, averaged over each input's "
        "windows (or one per window).",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by train.py")
    parser.add_argument(
        "inputs", nargs="*", type=Path, metavar="FILE_OR_DIR",
        help=f"audio files, or folders searched recursively for {', '.join(AUDIO_SUFFIXES)}",
    )  # fmt: skip
    parser.add_argument(
        "--store",
        type=Path,
        metavar="STORE",
        help="a clip store of tagger prepare, instead of files (with --split)",
    )
    parser.add_argument(
        "--split", metavar="SPLIT", help="the store's split to embed: train, val or test"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="writes FILE.npy (the vectors) and FILE.csv (each row's input)",
    )
    parser.add_argument(
        "--per-window",
        action="store_true",
        help="one row per window, not per input (FILE.csv gives its start_s)",
    )
    parser.add_argument("--hop", type=number(SECONDS), metavar="SECONDS",
                        help="with --per-window: windows start this far apart (default: the "
                        "window length, the windows of the averaged vectors)")  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_trust_option(parser)
    args = parser.parse_args(argv)
    if args.store is None and not args.inputs:
        parser.error("give audio files or folders, or --store STORE --split SPLIT")
    if args.store is not None and args.inputs:
        parser.error("give audio files or --store, not both")
    if (args.store is None) != (args.split is None):
        parser.error("--store and --split go together: --store STORE --split SPLIT")
    if args.hop is not None and not args.per_window:
        parser.error("--hop sets the windows of --per-window: give --per-window too")
    for path in (args.out, *output_paths(args.out)):
        if path.is_dir():
            which = "" if path == args.out else f": {path}"
            parser.error(f"--out {args.out}{which} is a folder; give a file name (FILE writes "
                         "FILE.npy and FILE.csv)")  # fmt: skip
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here (leave --device at cpu)")
    return args


def fail(message: str, status: int = 2) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def window_hop(args: argparse.Namespace, embedder: Embedder) -> int | None:
    """``--hop`` in samples at the model's rate (None: the window); exits with status 2 when
    it rounds to no sample or is longer than a window (windows would leave gaps)."""
    if args.hop is None:
        return None
    hop = round(args.hop * embedder.sample_rate)
    if not 1 <= hop <= embedder.window:
        fail(f"--hop {args.hop} is {hop} samples at the model's {embedder.sample_rate} Hz; give "
             f"1/{embedder.sample_rate} s to {embedder.window / embedder.sample_rate:g} s, the "
             "model's window")  # fmt: skip
    return hop


def main() -> None:
    args = parse_args(sys.argv[1:])
    try:
        embedder = Embedder.from_checkpoint(args.checkpoint, args.device, trusted(args))
        hop = window_hop(args, embedder)
        store: ClipStore | None = None
        if args.store is not None:
            store, rows = store_rows(args.store, args.split, embedder.sample_rate)
            inputs: list = rows
        else:
            files, left_out = audio_files(args.inputs)
            for path, why in left_out:
                print(f"{PROG}: left out {path}: {why}", file=sys.stderr)
            inputs = files
    except ConfigError as error:
        fail(str(error))

    embeddings: list[Embedding] = []
    skipped: list[AudioError] = []
    unit = "clip" if store is not None else "file"
    with tqdm(total=len(inputs), unit=unit, desc="embed", delay=PROGRESS_DELAY_S,
              file=sys.stderr) as bar:  # fmt: skip
        for item in inputs:
            try:
                if store is not None:
                    embedding = embedder.embed_clip(store, item, hop)
                else:
                    embedding = embedder.embed_file(item, hop)
            except AudioError as error:
                bar.write(f"{PROG}: skipped {error}", file=sys.stderr)
                skipped.append(error)
            else:
                if embedding.truncated:
                    bar.write(f"{PROG}: warning: {embedding.name}: {embedding.truncated}; "
                              "embedded on what it holds", file=sys.stderr)  # fmt: skip
                embeddings.append(embedding)
            bar.update(1)

    if not embeddings:
        fail(f"none of the {len(inputs)} inputs could be embedded; nothing written", 1)
    # a file that cannot be written ends the command (one line, status 1: tagger.cli.main)
    npy, index, shape = write_embeddings(args.out, embeddings, args.per_window)
    rows = "windows" if args.per_window else "inputs"
    print(f"wrote {npy} ({shape[0]} {rows} x {shape[1]}, float32) and {index}")
    if skipped:
        print(f"{PROG}: {len(skipped)} of {len(inputs)} inputs skipped", file=sys.stderr)
        raise SystemExit(1)
