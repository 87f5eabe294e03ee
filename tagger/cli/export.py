"""``tagger export CKPT --format torchscript|onnx --out FILE``: a standalone tagger.

See ``tagger.export`` for the exported model's input and output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagger.cli.trust import add_trust_option, trusted
from tagger.errors import ConfigError
from tagger.export import export, metadata
from tagger.module import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="tagger export",
        description="Export a checkpoint as a standalone model: raw audio windows "
        "[batch, n_windows, 1, window_length] on the int16 scale -> tag probabilities "
        "[batch, K]. Tag names, sample rate, window length and input scale go to FILE.json.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by train.py")
    parser.add_argument("--format", choices=("torchscript", "onnx"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="the model file to write")
    add_trust_option(parser)
    args = parser.parse_args(sys.argv[1:])
    try:
        model, run_config = load_trained(args.checkpoint, trusted(args))
        info = metadata(model, run_config, args.checkpoint)
        model_file, sidecar = export(model, info, args.format, args.out)
    except ConfigError as error:
        print(f"tagger export: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.format} model written to {model_file}, its tags and input to {sidecar}")
