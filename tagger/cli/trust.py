"""``--trust-module MODULE``: the option of every command that builds a model from a
checkpoint, naming a module of the user's own whose classes that checkpoint may name
(``tagger.targets``)."""

from __future__ import annotations

import argparse


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust-module MODULE`` (repeatable) to ``parser``; read it with ``trusted``."""
    parser.add_argument(
        "--trust-module", action="append", default=[], metavar="MODULE", dest="trust_module",
        help="a module of your own (e.g. my_models) whose classes the checkpoint may name; "
        "by default only tagger's own networks and torch.optim are built from a checkpoint",
    )  # fmt: skip


def trusted(args: argparse.Namespace) -> tuple[str, ...]:
    """The modules given with ``--trust-module``, checked to be module names."""
    # imported here: tagger.targets imports torch, which tagger predict BUNDLE runs without
    from tagger.targets import module_names

    return module_names(args.trust_module)
