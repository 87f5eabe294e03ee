"""``tagger export CKPT_OR_BUNDLE --format web --out DIR``: a page to try a trained tagger in a
browser (``tagger.web``): a static folder holding a bundle, the page and ONNX Runtime Web's
files, served by any web server (``python -m http.server -d DIR``) and working offline.

Bad input is one line and exit status 2: an ``--out`` that is a file or a folder with files
in it, ONNX Runtime Web's files not found (the line says how to get them), a checkpoint
that is not one, a bundle that is not one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.bundle import is_bundle
from tagger.cli.trust import trusted
from tagger.errors import ConfigError
from tagger.web import check_site_out, copy_bundle, find_ort_web, write_site


def bundle_writer(args: argparse.Namespace) -> Callable[[Path], object]:
    """What writes the page's bundle into a folder: a copy of the bundle ``args.checkpoint``
    (checked now), or the checkpoint exported (loaded now: ``ConfigError`` when it is not
    one)."""
    source: Path = args.checkpoint
    if is_bundle(source):
        from tagger.bundle import read_info

        read_info(source)
        return lambda folder: copy_bundle(source, folder)
    from tagger.export import bundle_info, export_bundle
    from tagger.module import load_trained

    model, run_config = load_trained(source, trusted(args))
    info = bundle_info(model, run_config, source)
    return lambda folder: export_bundle(model, info, folder)


def export_web(args: argparse.Namespace) -> None:
    """Write the page for ``tagger export ... --format web`` (``args``: its parsed arguments);
    exits with status 2 on bad input."""
    try:
        check_site_out(args.out)  # before the checkpoint is read
        ort_dir = find_ort_web()
        paths = write_site(args.out, bundle_writer(args), ort_dir)
    except ConfigError as error:
        print(f"tagger export: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"page written to {args.out} ({len(paths)} files); serve it with: python -m "
          f"http.server -d {args.out} and open http://localhost:8000/")  # fmt: skip
