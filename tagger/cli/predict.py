"""``tagger predict CKPT FILE_OR_DIR... [--top-k 10] [--format table|json|csv] [--device cpu]``.

Prints each file's most probable tags (table), every tag's probability (json, csv).
Files that cannot be decoded, hold NaN or infinite samples, or get non-finite
probabilities from the model are named on stderr and skipped; the others still come
out, and no NaN is ever printed (the json output is strict JSON). A truncated file is
tagged on what it holds, with a warning on stderr. Exit status: 0 when every file was
tagged, 1 when some were skipped, 2 when the arguments or the checkpoint are wrong.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from tagger.data.audio import AudioError
from tagger.errors import ConfigError
from tagger.predict import AUDIO_SUFFIXES, Prediction, Tagger, audio_files


def render_table(predictions: list[Prediction], tag_names: list[str], top_k: int) -> str:
    """Each file's name, then its ``top_k`` tags with probabilities, one per line."""
    width = max(map(len, tag_names))
    blocks = []
    for prediction in predictions:
        lines = [f"{prediction.path}"]
        lines += [f"  {tag:<{width}}  {p:.3f}" for tag, p in prediction.top(tag_names, top_k)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def render_json(
    predictions: list[Prediction], tag_names: list[str], top_k: int, skipped: list[AudioError]
) -> str:
    """Every file's probability for every tag, its ``top_k`` tags, and the skipped files."""
    document = {
        "tags": tag_names,
        "files": [
            {
                "file": str(prediction.path),
                "windows": prediction.windows,
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
    """``prediction``, if its probabilities are finite (else ``AudioError`` naming the file);
    a truncated file is named on stderr."""
    if not np.isfinite(prediction.probabilities).all():
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
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by train.py")
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="FILE_OR_DIR",
        help=f"audio files, or folders searched recursively for {', '.join(AUDIO_SUFFIXES)}",
    )  # fmt: skip
    parser.add_argument("--top-k", type=int, default=10, help="tags shown per file (default 10)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="table: top tags; json and csv: every tag's probability")  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, not {args.top_k}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here (leave --device at cpu)")
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    try:
        tagger = Tagger.from_checkpoint(args.checkpoint, args.device)
    except ConfigError as error:
        print(f"tagger predict: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    files = audio_files(args.inputs)
    if not files:
        print(f"tagger predict: error: no {', '.join(AUDIO_SUFFIXES)} files in "
              f"{', '.join(map(str, args.inputs))}", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)

    predictions: list[Prediction] = []
    skipped: list[AudioError] = []
    for path in files:
        try:
            predictions.append(checked(tagger.tag(path)))
        except AudioError as error:
            print(f"tagger predict: skipped {error}", file=sys.stderr)
            skipped.append(error)

    if args.format == "json":
        print(render_json(predictions, tagger.tag_names, args.top_k, skipped), end="")
    elif args.format == "csv":
        print(render_csv(predictions, tagger.tag_names), end="")
    elif predictions:
        print(render_table(predictions, tagger.tag_names, args.top_k), end="")
    if skipped:
        print(f"tagger predict: {len(skipped)} of {len(files)} files skipped", file=sys.stderr)
        raise SystemExit(1)
