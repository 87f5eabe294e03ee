"""``tagger predict CKPT FILE_OR_DIR... [--top-k 10] [--format table|json|csv] [--device cpu]
[--threshold P] [--taggram DIR [--hop SECONDS]]``.

Prints each file's decided tags and most probable tags (table), every tag's probability and
the decided tags (json), every tag's probability (csv). A tag is decided when its
probability is at least its threshold (``tagger.decisions``): the checkpoint's, fitted on
its validation split when it was trained; ``--threshold P``, one for every tag, overrides
them; a checkpoint that stores none (a run from before they were fitted) decides at 0.5,
and says so once on stderr.
With ``--taggram DIR`` it also writes each file's taggram, the probabilities of every
window, as ``DIR/<file name>.taggram.csv`` and ``.taggram.png`` (``write_taggram``;
same-named files of different folders go into subfolders named after the folders that
tell them apart: ``taggram_names``).
Files that cannot be decoded, hold NaN or infinite samples, or get non-finite
probabilities from the model are named on stderr and skipped; the others still come
out, and no NaN is ever printed (the json output is strict JSON). A truncated file is
tagged on what it holds, with a warning on stderr. A folder's files that are not audio
are named on stderr as left out; a folder with no audio file is an error. Exit status: 0
when every file was tagged, 1 when some were skipped, 2 when the arguments or the
checkpoint are wrong.

In place of a checkpoint it takes a bundle (a folder written by ``tagger export --format
bundle``: ``tagger.bundle``), run by onnxruntime: that path imports neither torch, Hydra nor
Lightning (torch only with ``--taggram``, for its pictures), so it runs where only numpy,
soundfile, soxr and onnxruntime are installed besides tagger.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.bundle import BundleTagger, is_bundle
from tagger.cli.args import SECONDS, THRESHOLD, TOP_K, number
from tagger.cli.trust import add_trust_option, trusted
from tagger.decisions import DEFAULT_THRESHOLD, decided_tags
from tagger.errors import ConfigError
from tagger.predictions import AUDIO_SUFFIXES, Prediction, audio_files, taggram_names
from tagger.prepare.audio import AudioError

if TYPE_CHECKING:  # tagger.predict imports torch: a bundle is tagged without it
    from tagger.predict import Tagger


def _decided_line(prediction: Prediction, tag_names: list[str], thresholds: np.ndarray) -> str:
    tags = decided_tags(prediction.probabilities, thresholds, tag_names)
    shown = ", ".join(f"{tag} {p:.3f}" for tag, p in tags)
    return f"  tags: {shown or 'none (no tag reaches its threshold)'}"


def render_table(predictions: list[Prediction], tag_names: list[str], top_k: int,
                 thresholds: np.ndarray | None = None) -> str:  # fmt: skip
    """Each file's name, its decided tags (``tags: rock 0.912, guitar 0.701``: probability
    at least the tag's threshold, most probable first; none without ``thresholds``), then
    its ``top_k`` tags with probabilities, one per line."""
    width = max(map(len, tag_names))
    blocks = []
    for prediction in predictions:
        lines = [f"{prediction.path}"]
        if thresholds is not None:
            lines.append(_decided_line(prediction, tag_names, thresholds))
        lines += [f"  {tag:<{width}}  {p:.3f}" for tag, p in prediction.top(tag_names, top_k)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def render_json(
    predictions: list[Prediction],
    tag_names: list[str],
    top_k: int,
    skipped: list[AudioError],
    thresholds: np.ndarray | None = None,
    source: str = "default",
) -> str:
    """Every file's probability for every tag, its decided tags (``tags``: probability at
    least the tag's threshold, most probable first), its ``top_k`` tags, and the skipped
    files; ``thresholds`` (each tag's value and their ``source``: checkpoint,
    --threshold or default) once. Without ``thresholds``, ``DEFAULT_THRESHOLD``."""
    if thresholds is None:
        thresholds = np.full(len(tag_names), DEFAULT_THRESHOLD)
    document = {
        "tags": tag_names,
        "thresholds": {
            "source": source,
            "values": dict(zip(tag_names, map(float, thresholds), strict=True)),
        },
        "files": [
            {
                "file": str(prediction.path),
                "windows": prediction.windows,
                "tags": [
                    {"tag": t, "probability": p}
                    for t, p in decided_tags(prediction.probabilities, thresholds, tag_names)
                ],
                "top": [{"tag": t, "probability": p} for t, p in prediction.top(tag_names, top_k)],
                "probabilities": dict(
                    zip(tag_names, prediction.probabilities.tolist(), strict=True)
                ),
            }
            for prediction in predictions
        ],
        "skipped": [{"file": str(error.path), "reason": error.reason} for error in skipped],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def render_csv(predictions: list[Prediction], tag_names: list[str]) -> str:
    """One row per file: ``file`` then one column per tag (probabilities, 6 decimals)."""
    rows = [["file", *tag_names]]
    rows += [[str(p.path), *(f"{x:.6f}" for x in p.probabilities)] for p in predictions]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def checked(prediction: Prediction) -> Prediction:
    """``prediction``, if its probabilities (and its taggram's) are finite, else ``AudioError``
    naming the file; a truncated file is named on stderr."""
    taggram = prediction.taggram
    if not np.isfinite(prediction.probabilities).all() or (
        taggram is not None and not np.isfinite(taggram.probabilities).all()
    ):
        raise AudioError(
            prediction.path,
            "the model gives NaN or infinite probabilities for it (a diverged checkpoint?)",
        )
    if prediction.truncated:
        print(f"tagger predict: warning: {prediction.path}: {prediction.truncated}; tagged on "
              "what it holds", file=sys.stderr)  # fmt: skip
    return prediction


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tagger predict",
        description="Tag audio files with a trained checkpoint: each file is decoded, "
        "resampled to the model's rate, cut into the model's windows and averaged.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by train.py, or a "
                        "bundle: a folder written by tagger export --format bundle")  # fmt: skip
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="FILE_OR_DIR",
        help=f"audio files, or folders searched recursively for {', '.join(AUDIO_SUFFIXES)}",
    )  # fmt: skip
    parser.add_argument(
        "--top-k", type=number(TOP_K), default=10, help="tags shown per file (default 10)"
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="table: top tags; json and csv: every tag's probability")  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threshold", type=number(THRESHOLD), metavar="P",
                        help="decide every tag at this probability (0 to 1) instead of the "
                        "checkpoint's thresholds, fitted on its validation split")  # fmt: skip
    parser.add_argument("--taggram", type=Path, metavar="DIR",
                        help="also write each file's window-by-window tag probabilities here: "
                        "<file name>.taggram.csv and .taggram.png")  # fmt: skip
    parser.add_argument("--hop", type=number(SECONDS), metavar="SECONDS",
                        help="taggram windows start this far apart; shorter than a window, "
                        "they overlap (default: the window length)")  # fmt: skip
    add_trust_option(parser)
    args = parser.parse_args(argv)
    if args.hop is not None and args.taggram is None:
        parser.error("--hop sets the taggram's windows: give --taggram DIR too")
    if args.taggram is not None and args.taggram.exists() and not args.taggram.is_dir():
        parser.error(f"--taggram {args.taggram} is a file; give a folder (made if missing)")
    if args.device == "cuda" and not is_bundle(args.checkpoint) and not _cuda_available():
        parser.error("--device cuda: no CUDA GPU is available here (leave --device at cpu)")
    return args


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load_tagger(args: argparse.Namespace) -> Tagger | BundleTagger:
    """The checkpoint's tagger, or the bundle's (a folder); ``ConfigError`` naming the file.
    With ``--taggram``, a bundle needs tagger's drawing (matplotlib, torch) too."""
    if not is_bundle(args.checkpoint):
        try:
            from tagger.predict import Tagger
        except ImportError as error:  # an install for bundles alone
            raise ConfigError(f"{args.checkpoint} is not a bundle (a folder), and reading a "
                              f"checkpoint needs {error.name}, which is not installed here: "
                              "export it as a bundle (tagger export CKPT --format bundle --out "
                              "DIR) or pip install tagger with its dependencies") from None
        return Tagger.from_checkpoint(args.checkpoint, args.device, trusted(args))
    if args.taggram:
        try:
            import tagger.predict  # noqa: F401  (write_taggram draws with matplotlib, torch)
        except ImportError as error:
            raise ConfigError(f"--taggram draws its pictures with tagger's full install, and "
                              f"{error.name} is not installed here; tag the bundle without "
                              "--taggram, or pip install tagger with its dependencies"
                              ) from None  # fmt: skip
    return BundleTagger.from_bundle(args.checkpoint, args.device)


def taggram_hop(args: argparse.Namespace, tagger: Tagger | BundleTagger) -> int:
    """``--hop`` in samples at the model's rate (default: the window); exits with status 2
    when it rounds to no sample or is longer than a window (windows would leave gaps)."""
    if args.hop is None:
        return tagger.window
    hop = round(args.hop * tagger.sample_rate)
    window_s = tagger.window / tagger.sample_rate
    if not 1 <= hop <= tagger.window:
        print(f"tagger predict: error: --hop {args.hop} is {hop} samples at the model's "
              f"{tagger.sample_rate} Hz; give 1/{tagger.sample_rate} s to {window_s:g} s, the "
              "model's window", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    return hop


def decision_thresholds(tagger: Tagger, threshold: float | None) -> tuple[np.ndarray, str]:
    """Each tag's threshold [K] and where it comes from: ``--threshold`` (one for every
    tag), the ``checkpoint``'s own, else ``default`` (``DEFAULT_THRESHOLD``, said once on
    stderr: a checkpoint from before thresholds were stored)."""
    names = tagger.tag_names
    if threshold is not None:
        return np.full(len(names), threshold), "--threshold"
    stored = getattr(tagger, "thresholds", None)  # any tagger: a test's may have none
    if stored:
        return np.array([stored[tag] for tag in names], dtype=np.float64), "checkpoint"
    print(f"tagger predict: note: the checkpoint stores no decision thresholds (trained "
          f"before they were fitted); deciding every tag at {DEFAULT_THRESHOLD} (--threshold P "
          "sets another)", file=sys.stderr)  # fmt: skip
    return np.full(len(names), DEFAULT_THRESHOLD), "default"


def main() -> None:
    args = parse_args(sys.argv[1:])
    try:
        tagger = load_tagger(args)
    except ConfigError as error:
        print(f"tagger predict: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        files, left_out = audio_files(args.inputs)
    except ConfigError as error:  # a folder with no audio file: never dropped unsaid
        print(f"tagger predict: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for path, why in left_out:
        print(f"tagger predict: left out {path}: {why}", file=sys.stderr)
    if not files:
        print(f"tagger predict: error: no {', '.join(AUDIO_SUFFIXES)} files in "
              f"{', '.join(map(str, args.inputs))}", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    hop = taggram_hop(args, tagger) if args.taggram else None
    thresholds, source = (None, "") if args.format == "csv" else decision_thresholds(
        tagger, args.threshold
    )  # csv: the probabilities alone
    names = taggram_names(files)

    predictions: list[Prediction] = []
    skipped: list[AudioError] = []
    for path in files:
        try:
            prediction = checked(tagger.tag(path, hop))
        except AudioError as error:
            print(f"tagger predict: skipped {error}", file=sys.stderr)
            skipped.append(error)
            continue
        predictions.append(prediction)
        if args.taggram:
            # a taggram that cannot be written ends the command (one line, status 1: the
            # top-level handler of tagger.cli.main)
            from tagger.predict import write_taggram

            write_taggram(prediction, tagger.tag_names, args.taggram, names[path], args.top_k)

    if args.format == "json":
        print(render_json(predictions, tagger.tag_names, args.top_k, skipped, thresholds,
                          source), end="")  # fmt: skip
    elif args.format == "csv":
        print(render_csv(predictions, tagger.tag_names), end="")
    elif predictions:
        print(render_table(predictions, tagger.tag_names, args.top_k, thresholds), end="")
    if args.taggram and predictions:
        print(f"tagger predict: taggrams of {len(predictions)} files in {args.taggram}",
              file=sys.stderr)  # fmt: skip
    if skipped:
        print(f"tagger predict: {len(skipped)} of {len(files)} files skipped", file=sys.stderr)
        raise SystemExit(1)
