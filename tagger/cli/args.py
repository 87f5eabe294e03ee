"""The command line's numeric flags, checked in one place with the settings' ``Spec``.

Every number a ``tagger`` command takes on its command line is parsed by a type made here
(``number``, ``seconds_or_none``), from a ``tagger.settings.Spec``: NaN, infinity, text,
a fraction where a whole number is due and anything outside the range are refused by
argparse in one line (``prog: error: argument --flag: must be ..., not 'nan'``, after
the usage; exit status 2). ``tests/test_gate_settings.py`` checks that no command has a
flag typed plain ``int`` or ``float``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tagger.settings import SAMPLE_RATE, SEED, Spec

#: Seconds of audio: a clip, a track's limit, a taggram's hop (up to a day).
SECONDS = Spec("float", 0.0, 86_400.0, low_open=True, unit=" of seconds")
#: Seconds of audio where 0 means none (``--min-seconds``: no padding).
SECONDS_OR_ZERO = Spec("float", 0.0, 86_400.0, unit=" of seconds")
#: Processes or threads.
WORKERS = Spec("int", 1, 1024, unit=" (processes)")
#: Clips per batch, as ``data.batch_size`` takes them.
BATCH = Spec("int", 1, 100_000, unit=" (clips per batch)")
#: A fraction of a data set held out (0: none).
FRACTION = Spec("float", 0.0, 1.0, high_open=True, unit=" (a fraction)")
#: Tags shown per file.
TOP_K = Spec("int", 1, 100_000, unit=" (tags)")
#: A decision threshold: a tag is decided when its probability is at least this.
THRESHOLD = Spec("float", 0.0, 1.0, unit=" (a probability)")
#: MTG-Jamendo's split-0 ... split-4.
JAMENDO_SPLIT = Spec("int", 0, 4, unit=" (the N of split-N)")
#: (seed and sample rate flags take what the config settings take: ``SEED``, ``SAMPLE_RATE``)
__all__ = [
    "BATCH", "FRACTION", "JAMENDO_SPLIT", "SAMPLE_RATE", "SECONDS", "SECONDS_OR_ZERO", "SEED",
    "THRESHOLD", "TOP_K", "WORKERS", "number", "seconds_or_none", "spec_of",
]  # fmt: skip


def _parse(text: str, spec: Spec) -> Any:
    """``text`` as the number ``spec`` takes; ``ArgumentTypeError`` saying why not."""
    try:
        value: Any = int(text) if spec.kind == "int" else float(text)
    except ValueError:
        try:  # a whole number written as 1e3 or 2.0 is still refused below, as a float
            value = float(text)
        except ValueError:
            value = text
    problem = spec.problem(value, repr(text))
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def number(spec: Spec) -> Callable[[str], Any]:
    """An argparse ``type``: the number ``spec`` takes (int or float), else one line."""
    if not spec.numeric:
        raise ValueError(f"number() needs a numeric Spec, not {spec.kind}")

    def parse(text: str) -> Any:
        return _parse(text, spec)

    parse.spec = spec  # type: ignore[attr-defined]  # for spec_of and the tests
    parse.__name__ = f"{spec.kind} number"  # argparse names the type in some messages
    return parse


def seconds_or_none(spec: Spec = SECONDS) -> Callable[[str], float | None]:
    """An argparse ``type``: a number of seconds that ``spec`` takes, or ``none``."""

    def parse(text: str) -> float | None:
        if text.strip().lower() == "none":
            return None
        try:
            return _parse(text, spec)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{error}; or none") from None

    parse.spec = spec  # type: ignore[attr-defined]
    parse.__name__ = "seconds or none"
    return parse


def spec_of(action: argparse.Action) -> Spec | None:
    """The ``Spec`` behind an argparse action's type (None for a non-numeric flag)."""
    return getattr(action.type, "spec", None)
