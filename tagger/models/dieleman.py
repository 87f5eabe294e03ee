"""The raw-waveform tagger of Dieleman & Schrauwen (2014), "End-to-end learning for
music audio", as drawn in the replication paper's Fig. 1, with the paper's two
first-layer ablations (its Tables 2 and 3) as options.

One sub-clip of raw audio goes in, one logit per tag comes out; averaging over a
clip's sub-clips happens outside the network (``tagger.aggregation``).

    input            [N, 1, T]         raw samples in [-1, 1]
    strided conv     [N, 32, F]        32 filters, length L, stride S, no padding
                                       F = (T - L) // S + 1
    feature pool     [N, 32 // p, F]   optional: L2 or max over groups of p filters
    conv 8 + pool 4  [N, 32, F // 4]   'same' padding: the conv keeps the length
    conv 8 + pool 4  [N, 32, F // 16]
    flatten          [N, 32 * (F // 16)]
    dense            [N, 100]
    dense            [N, num_tags]     logits

Each conv and the first dense layer is followed by BatchNorm (optional) and ReLU.
The first layer's ReLU can be replaced by log(1 + C·x²) or log(1 + C·|x|) (Table 2),
and its filters can be pooled in groups before that nonlinearity (Table 3): conv,
BatchNorm, feature pool, nonlinearity. Pooling the linear responses makes L2 pooling
of a pair of filters their joint magnitude, like a quadrature pair.

The length-8 convolutions are zero-padded so that every geometry of Table 1 fits
the coursework's 34,950-sample sub-clips (the replication paper's "adaptive
padding"): unpadded, 1024/1024 would leave no frames after the second pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from tagger.errors import ConfigError
from tagger.models.layers import ConvBNReLU, init_weights

Nonlinearity = Literal["relu", "log1p_sq", "log1p_abs"]
FeaturePooling = Literal["none", "l2", "max"]


def strided_frames(n_samples: int, length: int, stride: int) -> int:
    """Number of frames an unpadded conv of ``length``/``stride`` makes from ``n_samples``."""
    return (n_samples - length) // stride + 1 if n_samples >= length else 0


def pooled_frames(subclip_len: int, conv_length: int, conv_stride: int, pool_size: int) -> int:
    """Frames left after the first layer (L, S) and two max-pools: F // pool_size².

    Raises ConfigError, naming the config keys to change, when the stride exceeds the
    length or when no frame would be left.
    """
    for key, value in (("conv.length", conv_length), ("conv.stride", conv_stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number of samples, not {value!r}")
        if value < 1:
            shorthand = key.split(".")[1]
            raise ConfigError(
                f"{key} must be a positive number of samples, not {value} "
                f"(set {shorthand}=N or {key}=N with N >= 1)"
            )
    if not 0 < conv_stride <= conv_length:
        raise ConfigError(
            f"first-layer stride {conv_stride} must be between 1 and its length {conv_length} "
            "(set conv.stride <= conv.length)"
        )
    pooled = strided_frames(subclip_len, conv_length, conv_stride) // pool_size // pool_size
    if pooled < 1:
        needed = conv_length + (pool_size * pool_size - 1) * conv_stride
        raise ConfigError(
            f"sub-clips of {subclip_len} samples are too short for a first layer of length "
            f"{conv_length} and stride {conv_stride}: the network needs at least {needed} "
            "(raise data.subclip_len or lower conv.length/conv.stride)"
        )
    return pooled


def conv_pool_layers(
    c_in: int, filters: Sequence[int], kernel_size: int, pool_size: int, batch_norm: bool
) -> list[nn.Module]:
    """Dieleman's later layers, flat: per width c, conv k ('same') + BN + ReLU + max-pool.

    [N, c_in, F] -> [N, filters[-1], F // pool_size ** len(filters)]
    """
    layers: list[nn.Module] = []
    for c_out in filters:
        layers += ConvBNReLU(
            c_in, c_out, kernel_size, padding="same", pool=pool_size, batch_norm=batch_norm
        )
        c_in = c_out
    return layers


def dense_head(dense_in: int, dense_units: int, num_tags: int, batch_norm: bool) -> nn.Sequential:
    """Flatten, dense + BN + ReLU, dense: [N, C, F] with C·F = dense_in -> [N, num_tags]."""
    return nn.Sequential(
        nn.Flatten(),  # [N, dense_in]
        nn.Linear(dense_in, dense_units, bias=not batch_norm),
        nn.BatchNorm1d(dense_units) if batch_norm else nn.Identity(),
        nn.ReLU(),  # [N, dense_units]
        nn.Linear(dense_units, num_tags),  # [N, num_tags]
    )


class Log1p(nn.Module):
    """Dieleman's compressive nonlinearities: log(1 + C·x²) or, with ``squared=False``,
    log(1 + C·|x|). Elementwise; C is a fixed hyperparameter, not learned."""

    def __init__(self, c: float, squared: bool) -> None:
        super().__init__()
        if c <= 0:
            raise ConfigError(
                f"the log nonlinearity's C must be positive, not {c} (model.net.log_c)"
            )
        self.c = float(c)
        self.squared = squared

    def forward(self, x: Tensor) -> Tensor:
        return torch.log1p(self.c * (x.square() if self.squared else x.abs()))

    def extra_repr(self) -> str:
        return f"log(1 + {self.c:g}·{'x²' if self.squared else '|x|'})"


class FeaturePool(nn.Module):
    """Pooling across channels: each group of ``size`` adjacent channels becomes one.

    [N, C, F] -> [N, C // size, F]; ``l2`` takes the group's Euclidean norm
    sqrt(Σ x²), ``max`` its maximum (maxout).
    """

    def __init__(self, mode: Literal["l2", "max"], size: int) -> None:
        super().__init__()
        self.mode = mode
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        groups = x.unflatten(1, (-1, self.size))  # [N, C // size, size, F]
        if self.mode == "l2":
            return torch.linalg.vector_norm(groups, dim=2)
        return groups.amax(dim=2)

    def extra_repr(self) -> str:
        return f"{self.mode}, size={self.size}"


def first_layer_activation(
    channels: int,
    nonlinearity: Nonlinearity,
    log_c: float,
    feature_pool: FeaturePooling,
    pool_size: int,
) -> list[nn.Module]:
    """Feature pooling over groups of ``pool_size`` of the ``channels`` filters (unless
    ``none``), then the nonlinearity, as a list of modules."""
    if nonlinearity not in ("relu", "log1p_sq", "log1p_abs"):
        raise ConfigError(
            f"model.net.nonlinearity must be relu, log1p_sq or log1p_abs, not {nonlinearity!r}"
        )
    if feature_pool not in ("none", "l2", "max"):
        raise ConfigError(f"model.net.feature_pool must be none, l2 or max, not {feature_pool!r}")
    layers: list[nn.Module] = []
    if feature_pool != "none":
        if pool_size < 1 or channels % pool_size:
            raise ConfigError(
                f"feature pooling groups of {pool_size} must divide the {channels} first-layer "
                "filters (set model.net.feature_pool_size or model.net.filters)"
            )
        layers.append(FeaturePool(feature_pool, pool_size))
    if nonlinearity == "relu":
        return [*layers, nn.ReLU()]
    return [*layers, Log1p(log_c, squared=nonlinearity == "log1p_sq")]


class DielemanCNN(nn.Module):
    """Strided conv, two conv/pool blocks and two dense layers; see the module docstring.

    Args:
        num_tags: number of output logits.
        subclip_len: samples per sub-clip T; fixes the first dense layer's width.
        conv_length: first-layer filter length L, in samples.
        conv_stride: first-layer stride S, in samples; at most L.
        filters: output channels of the strided conv and of the two length-8 convs.
        kernel_size: length of the two later convs (8 in the paper).
        pool_size: max-pool size after each later conv (4 in the paper).
        dense_units: width of the hidden dense layer (100 in the paper).
        batch_norm: BatchNorm after every layer but the output one.
        nonlinearity: of the first layer: ``relu``, ``log1p_sq`` = log(1 + C·x²) or
            ``log1p_abs`` = log(1 + C·|x|) (Table 2).
        log_c: the constant C of the log nonlinearities.
        feature_pool: pooling across first-layer filters: ``none``, ``l2`` or ``max`` (Table 3).
        feature_pool_size: filters per pooled group (2 or 4 in the paper); must divide
            ``filters[0]``.
    """

    #: the front end that ``model.freeze=front_end`` freezes (``tagger.models.parts``):
    #: the strided conv and its batch norm
    FRONT_END = ("features.0", "features.1")

    def __init__(
        self,
        num_tags: int = 50,
        subclip_len: int = 34950,
        conv_length: int = 256,
        conv_stride: int = 256,
        filters: Sequence[int] = (32, 32, 32),
        kernel_size: int = 8,
        pool_size: int = 4,
        dense_units: int = 100,
        batch_norm: bool = True,
        nonlinearity: Nonlinearity = "relu",
        log_c: float = 10000.0,
        feature_pool: FeaturePooling = "none",
        feature_pool_size: int = 2,
    ) -> None:
        super().__init__()
        pooled = pooled_frames(subclip_len, conv_length, conv_stride, pool_size)
        f1, f2, f3 = filters
        activation = first_layer_activation(
            f1, nonlinearity, log_c, feature_pool, feature_pool_size
        )
        pooled_width = f1 if feature_pool == "none" else f1 // feature_pool_size
        self.dense_in = f3 * pooled

        self.features = nn.Sequential(
            nn.Conv1d(1, f1, conv_length, stride=conv_stride, bias=not batch_norm),  # [N, f1, F]
            nn.BatchNorm1d(f1) if batch_norm else nn.Identity(),
            *activation,  # [N, f1 // p, F]
            *conv_pool_layers(pooled_width, (f2, f3), kernel_size, pool_size, batch_norm),
            # [N, f3, F // 16]
        )
        self.classifier = dense_head(self.dense_in, dense_units, num_tags, batch_norm)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw sub-clips [N, 1, T] in [-1, 1] -> tag logits [N, num_tags]."""
        return self.classifier(self.features(x))
