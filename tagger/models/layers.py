"""Building blocks shared by the tagging networks; every tensor is [N, channels, time]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal weights and zero biases for every conv and dense layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class SameConv1d(nn.Conv1d):
    """``nn.Conv1d(c_in, c_out, kernel_size, padding="same")``, stride 1: [N, c_in, T] ->
    [N, c_out, T], with the same parameters and output.

    An even kernel (Dieleman's length-8 convs) needs one more zero on the right than on
    the left. PyTorch's 'same' adds that zero by copying the input, with a warning each
    process; this adds it explicitly, by the same two calls, so there is nothing to warn of.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2, bias=bias)
        self.extra_right = (kernel_size - 1) % 2  # samples: 1 for an even kernel, else 0

    def forward(self, x: Tensor) -> Tensor:
        """[N, c_in, T] -> [N, c_out, T]."""
        if self.extra_right:
            x = F.pad(x, (0, self.extra_right))
        return self._conv_forward(x, self.weight, self.bias)


def conv1d(
    c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int | str = 0,
    bias: bool = True,
) -> nn.Conv1d:
    """``nn.Conv1d``; with ``padding="same"`` a ``SameConv1d``."""
    if padding == "same":
        return SameConv1d(c_in, c_out, kernel_size, bias=bias)
    return nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias)


class ConvBNReLU(nn.Sequential):
    """Conv1d, BatchNorm, ReLU and an optional max-pool: [N, c_in, T] -> [N, c_out, T' // pool].

    T' is the conv's output length (T with ``padding="same"``). A plain ``nn.Sequential``,
    so it can be nested, or unpacked (``*ConvBNReLU(...)``) into a flat one.

    Args:
        c_in, c_out: input and output channels.
        kernel_size, stride, padding: of the conv, as in ``nn.Conv1d``.
        pool: max-pool size and stride after the ReLU (1: no pooling).
        batch_norm: BatchNorm after the conv (the conv then has no bias); without it
            an ``nn.Identity`` keeps the layer indices the same.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        pool: int = 1,
        batch_norm: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            conv1d(c_in, c_out, kernel_size, stride, padding, bias=not batch_norm),
            nn.BatchNorm1d(c_out) if batch_norm else nn.Identity(),
            nn.ReLU(),
        ]
        if pool > 1:
            layers.append(nn.MaxPool1d(pool))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018), as Kim, Lee & Nam (2018) use it in 1-D.

    Each channel is rescaled by a gate computed from the time-averaged channels:
    [N, C, T] -> mean over T [N, C] -> dense C·ratio, ReLU -> dense C, sigmoid -> x * gate.
    Kim et al. call ``ratio`` the amplifying ratio (16: the hidden layer is 16x wider
    than C); ratios below 1 give SENet's bottleneck.
    """

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(channels * ratio))
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, T] -> [N, C, T]."""
        return x * self.gate(x.mean(dim=-1)).unsqueeze(-1)


class ResidualBlock(nn.Module):
    """Two convs with dropout between them, added to a shortcut, then ReLU and a max-pool.

        branch    conv k, BN, ReLU, dropout, conv k, BN, (SE)   [N, c_out, T]
        shortcut  identity, or conv 1 + BN when c_in != c_out  [N, c_out, T]
        output    max-pool(ReLU(shortcut + branch))            [N, c_out, T // pool]

    With ``se_ratio`` this is Kim, Lee & Nam's (2018) ReSE-2 block; without, a ResNet
    basic block with dropout between its convs (as in wide ResNets).

    Args:
        c_in, c_out: input and output channels.
        kernel_size: length of both convs ('same' padding, so T is kept).
        dropout: dropout probability between the two convs.
        se_ratio: amplifying ratio of a squeeze-and-excitation gate on the branch; None: no SE.
        pool: max-pool size after the ReLU (1: no pooling).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 3,
        dropout: float = 0.0,
        se_ratio: float | None = None,
        pool: int = 1,
    ) -> None:
        super().__init__()
        branch: list[nn.Module] = [
            ConvBNReLU(c_in, c_out, kernel_size, padding="same"),
            nn.Dropout(dropout),
            SameConv1d(c_out, c_out, kernel_size, bias=False),
            nn.BatchNorm1d(c_out),
        ]
        if se_ratio is not None:
            branch.append(SqueezeExcitation(c_out, se_ratio))
        self.branch = nn.Sequential(*branch)
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        )
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """[N, c_in, T] -> [N, c_out, T // pool]."""
        return self.pool(torch.relu(self.shortcut(x) + self.branch(x)))
