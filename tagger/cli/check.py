"""``tagger check [--workers 8] [train.py overrides ...]``: verify a data set before training.

    tagger check data=coursework data.root=DIR
    tagger check data=store data.path=STORE

Builds the data module exactly as ``train.py`` would with the same overrides, reads every
clip of every split once (``--workers`` threads, a progress bar on stderr) and prints
one line per clip that cannot be read, has the wrong shape, or holds NaN or infinite
samples, then one line per input the data leaves out (the files ``tagger prepare``
skipped). Exit status: 0 when every clip is usable, 1 when some are not (or the data
refuses to load), 2 for bad overrides.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hydra.utils import instantiate
from tqdm import tqdm

from tagger.check import check_splits, distinct_splits
from tagger.cli.args import WORKERS, number
from tagger.cli.hydra_setup import compose_run_config, quote_path_values
from tagger.errors import find_config_error
from tagger.settings import check_settings


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="tagger check", description=__doc__.split("\n\n")[0])
    main.add_argument(
        "--workers", type=number(WORKERS), default=8, help="clips read at once (threads)"
    )
    main.add_argument("overrides", nargs="*", help="train.py overrides, e.g. data=store ...")
    return main


def _fail(error: Exception, status: int) -> None:
    """Print the ``ConfigError`` behind ``error``, a line per line, and exit with ``status``;
    re-raise anything else."""
    config_error = find_config_error(error)
    if config_error is None:
        raise error
    for line in str(config_error).splitlines():
        print(f"tagger check: error: {line}", file=sys.stderr)
    raise SystemExit(status) from None


def main() -> None:
    args = parser().parse_args(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="tagger-check-") as run_dir:
        try:
            cfg = compose_run_config("train", Path(run_dir), quote_path_values(args.overrides))
            check_settings(cfg)
            datamodule = instantiate(cfg.data)
        except Exception as error:  # a bad override or data setting
            _fail(error, 2)
    try:
        splits = distinct_splits(datamodule)
    except Exception as error:  # the data refuses to load: its files are the problem
        _fail(error, 1)
    total = sum(len(dataset) for _, dataset in splits)
    shape = (datamodule.n_subclips, 1, datamodule.subclip_len)
    with tqdm(total=total, unit="clip", desc="check") as bar:
        problems = check_splits(splits, shape, len(datamodule.tag_names), args.workers, bar.update)
    for problem in problems:
        print(problem.line())
    for line in datamodule.left_out():  # not read here, but never left out unsaid
        print(f"left out {line}")
    names = ", ".join(f"{split} {len(dataset)}" for split, dataset in splits)
    print(f"checked {total} clips ({names}): "
          f"{len(problems) or 'no'} problem clip{'s' if len(problems) != 1 else ''}")  # fmt: skip
    raise SystemExit(1 if problems else 0)
