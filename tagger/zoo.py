"""The model zoo: every ``conf/model/NAME.yaml``, built and counted.

Each config, composed as ``train.py`` composes it (by the command line, ``tagger models``,
with any Hydra overrides, e.g. ``data.sample_rate=16000 conv.length=512``), has its
network instantiated for the data's tags. Parameters are counted on the network.
Multiply-adds are counted by ``torch.utils.flop_counter.FlopCounterMode`` during one
forward pass over one window, in eval mode, as FLOPs / 2: every convolution and matrix
product (``Conv1d``, ``Linear``, the mel filterbank). PyTorch has no formula for the FFT;
``FFT_FORMULAS`` gives the STFT's one: its window multiply plus the FFT. Other elementwise
work (BatchNorm, ReLU, pooling, SE scaling) is left out. Multiply-adds per second of
audio = per window x sample rate / window length.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tagger.config import CONFIG_DIR

MODEL_DIR = Path(CONFIG_DIR) / "model"


def model_names() -> list[str]:
    """The names ``model=NAME`` accepts: the files in conf/model, sorted."""
    return sorted(path.stem for path in MODEL_DIR.glob("*.yaml"))


def paper_of(name: str) -> str:
    """The paper a model config names in its ``# paper: ...`` comment line ("-" if none)."""
    match = re.search(r"^# paper: (.+)$", (MODEL_DIR / f"{name}.yaml").read_text(), re.M)
    return match.group(1).strip() if match else "-"


def _real_fft_flops(
    input_shape: torch.Size, dim: Sequence[int], *args: object, out_shape: torch.Size
) -> int:
    """FLOPs of ``aten._fft_r2c``, the FFT inside ``torch.stft`` (tagger's only FFT): each
    windowed frame of n samples counts n multiplications for its window plus n·log2(n)
    multiply-adds for the real FFT (rounded), 2 FLOPs each, once per transform."""
    n = math.prod(input_shape[d] for d in dim)
    transforms = math.prod(input_shape) // n
    return 2 * transforms * (n + round(n * math.log2(n)))


#: Formulas for ops ``FlopCounterMode`` does not count by itself (op -> FLOPs from shapes).
FFT_FORMULAS = {torch.ops.aten._fft_r2c: _real_fft_flops}


def count_multiply_adds(net: nn.Module, window_len: int) -> int:
    """Multiply-adds of ``net`` on one window [1, 1, window_len] (eval mode, no grad)."""
    was_training = net.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FFT_FORMULAS) as flops:
            net.eval()(torch.zeros(1, 1, window_len))
    finally:
        net.train(was_training)
    return flops.get_total_flops() // 2


@dataclass(frozen=True)
class ModelRow:
    """One model config, instantiated and counted."""

    name: str
    paper: str
    window_len: int  # samples
    sample_rate: int  # Hz
    num_tags: int
    parameters: int
    multiply_adds: int  # per window

    @property
    def multiply_adds_per_second(self) -> float:
        return self.multiply_adds * self.sample_rate / self.window_len


def build_net(cfg: DictConfig, num_tags: int) -> nn.Module:
    """The network ``cfg.model.net`` describes, with ``num_tags`` outputs."""
    return instantiate(OmegaConf.to_container(cfg.model.net, resolve=True), num_tags=num_tags)


def describe(name: str, cfg: DictConfig) -> ModelRow:
    """Build the network of ``cfg``, the train config with ``model=name``, and count it."""
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

