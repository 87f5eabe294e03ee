"""The ``tagger`` command: ``tagger train [overrides]`` and ``tagger eval [overrides]``."""

from __future__ import annotations

import sys

USAGE = """usage: tagger COMMAND [hydra overrides]

commands:
  train   train a tagger (same as python train.py); e.g. tagger train optimizer=adamw
  eval    evaluate a checkpoint (same as python eval.py); e.g. tagger eval ckpt_path=PATH
"""


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(USAGE, end="")
        raise SystemExit(0 if len(sys.argv) >= 2 else 2)
    command, sys.argv = sys.argv[1], [f"tagger {sys.argv[1]}", *sys.argv[2:]]
    if command == "train":
        from tagger.cli.train import main as run
    elif command == "eval":
        from tagger.cli.evaluate import main as run
    else:
        print(f"tagger: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
        raise SystemExit(2)
    run()
