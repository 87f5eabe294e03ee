"""``tagger report DIR [DIR ...] [--out DIR]``: a results table from sweep or run directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagger.errors import ConfigError
from tagger.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="tagger report",
        description="Read every training job's metrics.json under the given directories "
        "(finished, failed, interrupted, unfinished or unreadable) and write report.md, "
        "report.csv and curves.png: one row per "
        "config, mean ± std over seeds, with the published figure beside it.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, help="where to write (default: the first DIR)")
    args = parser.parse_args(sys.argv[1:])
    try:
        report = write_report(args.dirs, args.out or args.dirs[0])
    except ConfigError as error:
        print(f"tagger: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(report.markdown.read_text(), end="")
    print(
        f"\n{len(report.table)} configs from {len(report.jobs)} jobs; "
        f"written to {report.markdown} and {report.csv}"
    )
