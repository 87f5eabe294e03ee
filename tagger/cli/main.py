"""The ``tagger`` command: ``tagger COMMAND [arguments]``; ``tagger --help`` lists the commands.

Exit statuses of every command: 0 done, 2 bad input (arguments, settings, data, a
checkpoint; one line), 1 a failed file system (any ``OSError`` a command leaves
uncaught: one line naming the path, the reason and the fix), 128 + N stopped by signal N;
``predict``, ``embed`` and ``check`` also exit 1 when they skipped or found unusable files.
"""

from __future__ import annotations

import importlib
import sys

#: command -> (module whose ``main()`` runs it, one-line help). Each module reads sys.argv[1:].
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("tagger.cli.train", "train a tagger (= python train.py [overrides])"),
    "eval": ("tagger.cli.evaluate", "evaluate a checkpoint (= python eval.py ckpt_path=PATH)"),
    "models": ("tagger.cli.models", "print the model zoo: parameters, multiply-adds per second"),
    "prepare": ("tagger.cli.prepare", "decode MTAT or an audio folder into a clip store"),
    "check": ("tagger.cli.check", "read every clip of a data set once; list the unusable ones"),
    "report": ("tagger.cli.report", "results table (report.md/.csv) from sweep directories"),
    "predict": ("tagger.cli.predict", "tag audio files or folders with a checkpoint or bundle"),
    "embed": ("tagger.cli.embed", "vectors of audio files or a store's clips, for other models"),
    "export": ("tagger.cli.export", "a checkpoint as a standalone model: pt2, ONNX, a bundle"),
    "bench": ("tagger.cli.bench", "training throughput: model step, framework, coursework loop"),
    "robustness": ("tagger.cli.robustness", "AUC under time stretch, pitch shift, gain, noise"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}} {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: tagger COMMAND [arguments]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage(), end="")
        raise SystemExit(0 if len(sys.argv) >= 2 else 2)
    command = sys.argv[1]
    if command not in COMMANDS:
        print(f"tagger: unknown command {command!r}\n\n{usage()}", end="", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [f"tagger {command}", *sys.argv[2:]]
    try:
        importlib.import_module(COMMANDS[command][0]).main()
    except Exception as error:  # the top-level handler: a failed file system is one line
        try:
            from tagger.cli.hydra_setup import exit_on_os_error
        except ImportError:  # an install for bundles alone (tagger predict BUNDLE): no Hydra
            _exit_on_os_error_without_hydra(error)
            raise error from None
        exit_on_os_error(error)
        raise


def _exit_on_os_error_without_hydra(error: Exception) -> None:
    """``exit_on_os_error``'s one line and status 1 for an ``OSError``, where Hydra (which
    ``tagger.cli.hydra_setup`` imports) is not installed; else return."""
    if isinstance(error, OSError):
        from tagger.run_files import describe_os_error

        print(f"tagger: error: {describe_os_error(error)}", file=sys.stderr)
        raise SystemExit(1) from None
