"""``tagger export CKPT --format pt2|onnx|bundle|torchscript --out FILE_OR_DIR``: a standalone
tagger.

See ``tagger.export`` for the exported model's input and output, and ``tagger.bundle`` for a
bundle (a folder: ``model.onnx``, ``tagger.json``, ``MODEL_CARD.md``; ``tagger predict DIR``
runs it without torch). ``--format web`` writes a page to try the tagger in a browser
(``tagger.cli.web``; from a checkpoint or a bundle). ``--format torchscript`` is deprecated
(one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagger.cli.trust import add_trust_option, trusted
from tagger.cli.web import export_web
from tagger.errors import ConfigError
from tagger.export import (
    FORMATS,
    TORCHSCRIPT_NOTE,
    bundle_info,
    check_bundle_out,
    export,
    export_bundle,
    metadata,
)
from tagger.module import load_trained
from tagger.web import FORMAT as WEB_FORMAT


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="tagger export",
        description="Export a checkpoint as a standalone model: raw audio windows "
        "[batch, n_windows, 1, window_length] on the int16 scale -> tag probabilities "
        "[batch, K]. Tag names, sample rate, window length and input scale go to FILE.json. "
        "--format bundle writes a folder (model.onnx, tagger.json, MODEL_CARD.md) that "
        "tagger predict runs with onnxruntime, without torch; --format web, a folder with a "
        "page to try it in a browser (python -m http.server -d DIR).",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by train.py (web: "
                        "or a bundle's folder)")  # fmt: skip
    parser.add_argument("--format", choices=(*FORMATS, WEB_FORMAT), required=True,
                        help="pt2: torch.export's program; onnx; bundle: a folder for tagger "
                        "predict; web: a folder with a page for a browser; torchscript: "
                        "deprecated")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True,
                        help="the model file to write (bundle: a new or empty folder)")  # fmt: skip
    add_trust_option(parser)
    args = parser.parse_args(sys.argv[1:])
    if args.format == WEB_FORMAT:
        export_web(args)
        return
    try:
        if args.format == "bundle":  # before the checkpoint is read
            check_bundle_out(args.out)
        model, run_config = load_trained(args.checkpoint, trusted(args))
        if args.format == "bundle":
            info = bundle_info(model, run_config, args.checkpoint)
            paths = export_bundle(model, info, args.out)
        else:
            info = metadata(model, run_config, args.checkpoint)
            paths = list(export(model, info, args.format, args.out))
    except ConfigError as error:
        print(f"tagger export: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.format == "bundle":
        print(f"bundle written to {args.out}: {', '.join(p.name for p in paths)}; "
              f"tag with: tagger predict {args.out} FILES")  # fmt: skip
    else:
        print(f"{args.format} model written to {paths[0]}, its tags and input to {paths[1]}")
    if args.format == "torchscript":  # after it is written: a failure stays one line
        print(f"tagger export: note: {TORCHSCRIPT_NOTE}", file=sys.stderr)
