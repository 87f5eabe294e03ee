"""``tagger models [NAME ...] [KEY=VALUE ...]``: print the model zoo as a Markdown table.

Every ``conf/model/NAME.yaml`` (or the names given) is composed as ``train.py`` composes
it, with the given Hydra overrides (e.g. ``data.sample_rate=16000 conv.length=512``),
and its network is instantiated for the data's tags. Parameters are counted from the
network; multiply-adds with forward hooks during one pass over one window:

    Conv1d             output elements x (input channels / groups) x kernel length
    Linear             output elements x input features
    LogMelSpectrogram  per frame: window + real FFT (n log2 n) + mel filterbank

Elementwise work (BatchNorm, ReLU, pooling, SE scaling) is left out. Multiply-adds per
second of audio = per window x sample rate / window length.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from tagger.config import CONFIG_DIR, ConfigError, register_resolvers
from tagger.models.spectrogram import LogMelSpectrogram

MODEL_DIR = Path(CONFIG_DIR) / "model"


def model_names() -> list[str]:
    """The names ``model=NAME`` accepts: the files in conf/model, sorted."""
    return sorted(path.stem for path in MODEL_DIR.glob("*.yaml"))


def paper_of(name: str) -> str:
    """The paper a model config names in its ``# paper: ...`` comment line ("-" if none)."""
    match = re.search(r"^# paper: (.+)$", (MODEL_DIR / f"{name}.yaml").read_text(), re.M)
    return match.group(1).strip() if match else "-"


def _multiply_adds(module: nn.Module, output: Tensor) -> int:
    """Multiply-adds of one call of ``module`` that produced ``output``; 0 if not counted."""
    if isinstance(module, nn.Conv1d):
        return output.numel() * (module.in_channels // module.groups) * module.kernel_size[0]
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, LogMelSpectrogram):
        n = module.window_length
        per_frame = n + round(n * math.log2(n)) + module.mel.numel()
        return output.shape[0] * output.shape[-1] * per_frame
    return 0


def count_multiply_adds(net: nn.Module, window_len: int) -> int:
    """Multiply-adds of ``net`` on one window of ``window_len`` samples (eval mode)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _multiply_adds(module, output)

    handles = [module.register_forward_hook(hook) for module in net.modules()]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 1, window_len))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    return total


@dataclass(frozen=True)
class ModelRow:
    """One model config, instantiated and counted."""

    name: str
    paper: str
    window_len: int
    sample_rate: int
    num_tags: int
    parameters: int
    multiply_adds: int  # per window

    @property
    def multiply_adds_per_second(self) -> float:
        return self.multiply_adds * self.sample_rate / self.window_len


def compose_model(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The train config with ``model=name`` and ``overrides``, composed as train.py does."""
    if name not in model_names():
        raise ConfigError(f"no model config {name!r}; the models are {', '.join(model_names())}")
    register_resolvers()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"model={name}", *overrides])


def build_net(cfg: DictConfig, num_tags: int) -> nn.Module:
    """The network ``cfg.model.net`` describes, with ``num_tags`` outputs."""
    return instantiate(OmegaConf.to_container(cfg.model.net, resolve=True), num_tags=num_tags)


def describe(name: str, overrides: Sequence[str] = ()) -> ModelRow:
    """Compose ``model=name`` with ``overrides``, build its network and count it."""
    cfg = compose_model(name, overrides)
    num_tags = len(instantiate(cfg.data).tag_names)
    net = build_net(cfg, num_tags)
    window_len = int(cfg.data.subclip_len)
    return ModelRow(
        name=name,
        paper=paper_of(name),
        window_len=window_len,
        sample_rate=int(cfg.data.sample_rate),
        num_tags=num_tags,
        parameters=sum(p.numel() for p in net.parameters()),
        multiply_adds=count_multiply_adds(net, window_len),
    )


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
    warnings.filterwarnings("ignore", "Using padding='same' with even kernel")
    args = sys.argv[1:]
    if any(arg in ("-h", "--help") for arg in args):
        print(__doc__.replace("``", ""), end="")
        print(f"\nModels: {', '.join(model_names())}")
        return
    names = [arg for arg in args if "=" not in arg] or model_names()
    overrides = [arg for arg in args if "=" in arg]
    try:
        rows = [describe(name, overrides) for name in names]
    except ConfigError as error:
        print(f"tagger: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(rows))
