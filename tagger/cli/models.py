"""``tagger models [NAME ...] [KEY=VALUE ...]``: print the model zoo as a Markdown table.

Every ``conf/model/NAME.yaml`` (or the names given) is composed as ``train.py`` composes
it, with the given Hydra overrides (e.g. ``data.sample_rate=16000 conv.length=512``),
and its network is instantiated for the data's tags. Parameters are counted on the
network; multiply-adds by torch's FlopCounterMode during one pass over one window
(FLOPs / 2): every convolution and matrix product (conv, dense, mel filterbank), and the
spectrogram's FFT as n log2 n per frame. Elementwise work (window, BatchNorm, ReLU,
pooling, SE scaling) is left out. Multiply-adds per second of audio = per window x
sample rate / window length.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tagger.cli.hydra_setup import check_group_choices, exit_on_config_error, register_resolvers
from tagger.config import CONFIG_DIR
from tagger.errors import ConfigError
from tagger.settings import check_settings
from tagger.zoo import ModelRow, describe, model_names


def compose_model(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The train config with ``model=name`` and ``overrides``, composed and checked
    (``check_settings``) as train.py does."""
    if name not in model_names():
        raise ConfigError(f"no model config {name!r}; the models are {', '.join(model_names())}")
    check_group_choices(list(overrides))
    register_resolvers()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"model={name}", *overrides])
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"bad override: {str(error).splitlines()[0]}") from None
    check_settings(cfg)
    return cfg


def zoo_rows(names: Sequence[str] = (), overrides: Sequence[str] = ()) -> list[ModelRow]:
    """One row per model config in ``names`` (default: every one), with ``overrides``."""
    return [describe(name, compose_model(name, overrides)) for name in names or model_names()]


def _si(value: float) -> str:
    """3 significant digits with a k/M/G suffix: 1234567 -> '1.23 M'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.3g}"


def format_table(rows: list[ModelRow]) -> str:
    """The rows as a Markdown table with a line on what was counted under it."""
    header = ["model", "paper", "window", "parameters", "multiply-adds per second of audio"]
    cells = [
        [
            f"`{row.name}`",
            row.paper,
            f"{row.window_len:,} samples ({row.window_len / row.sample_rate:.2f} s)",
            f"{row.parameters:,}",
            _si(row.multiply_adds_per_second),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right = {3, 4}  # numbers

    def line(values: list[str]) -> str:
        padded = [
            value.rjust(width) if i in right else value.ljust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    rates = sorted({row.sample_rate for row in rows})
    tags = sorted({row.num_tags for row in rows})
    note = (
        f"Counted for {' / '.join(map(str, tags))} tags at {' / '.join(map(str, rates))} Hz "
        "with the configs' defaults; multiply-adds of the conv, dense and mel layers on one "
        "window (tagger models)."
    )
    return "\n".join([line(header), line(rule), *map(line, cells), "", note])


def main() -> None:
    args = sys.argv[1:]
    if any(arg in ("-h", "--help") for arg in args):
        print(__doc__.replace("``", ""), end="")
        print(f"\nModels: {', '.join(model_names())}")
        return
    names = [arg for arg in args if "=" not in arg]
    overrides = [arg for arg in args if "=" in arg]
    try:
        rows = zoo_rows(names, overrides)
    except Exception as error:  # a ConfigError, possibly wrapped by Hydra's instantiate
        exit_on_config_error(error)
        raise
    print(format_table(rows))
