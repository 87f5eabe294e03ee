"""The raw-waveform tagger of Dieleman & Schrauwen (2014), "End-to-end learning for
music audio", as drawn in the replication paper's Fig. 1.

One sub-clip of raw audio goes in, one logit per tag comes out; averaging over a
clip's sub-clips happens outside the network (``tagger.aggregation``).

    input            [N, 1, T]         raw samples in [-1, 1]
    strided conv     [N, 32, F]        32 filters, length L, stride S, no padding
                                       F = (T - L) // S + 1
    conv 8 + pool 4  [N, 32, F // 4]   'same' padding: the conv keeps the length
    conv 8 + pool 4  [N, 32, F // 16]
    flatten          [N, 32 * (F // 16)]
    dense            [N, 100]
    dense            [N, num_tags]     logits

Each conv and the first dense layer is followed by BatchNorm (optional) and ReLU.
The length-8 convolutions are zero-padded so that every geometry of Table 1 fits
the coursework's 34,950-sample sub-clips (the replication paper's "adaptive
padding"): unpadded, 1024/1024 would leave no frames after the second pooling.
"""

from __future__ import annotations

from torch import Tensor, nn

from tagger.config import ConfigError


def strided_frames(n_samples: int, length: int, stride: int) -> int:
    """Number of frames an unpadded conv of ``length``/``stride`` makes from ``n_samples``."""
    return (n_samples - length) // stride + 1 if n_samples >= length else 0


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal weights and zero biases for every conv and dense layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


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
    """

    def __init__(
        self,
        num_tags: int = 50,
        subclip_len: int = 34950,
        conv_length: int = 256,
        conv_stride: int = 256,
        filters: tuple[int, int, int] = (32, 32, 32),
        kernel_size: int = 8,
        pool_size: int = 4,
        dense_units: int = 100,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < conv_stride <= conv_length:
            raise ConfigError(
                f"first-layer stride {conv_stride} must be between 1 and its length {conv_length} "
                "(set conv.stride <= conv.length)"
            )
        frames = strided_frames(subclip_len, conv_length, conv_stride)
        pooled = frames // pool_size // pool_size
        if pooled < 1:
            needed = conv_length + (pool_size * pool_size - 1) * conv_stride
            raise ConfigError(
                f"sub-clips of {subclip_len} samples are too short for a first layer of length "
                f"{conv_length} and stride {conv_stride}: the network needs at least {needed} "
                "(raise data.subclip_len or lower conv.length/conv.stride)"
            )
        f1, f2, f3 = filters
        self.dense_in = f3 * pooled

        def conv_bn_relu(c_in: int, c_out: int, k: int, stride: int, padding) -> list[nn.Module]:
            conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=padding, bias=not batch_norm)
            return [conv, nn.BatchNorm1d(c_out) if batch_norm else nn.Identity(), nn.ReLU()]

        self.features = nn.Sequential(
            *conv_bn_relu(1, f1, conv_length, conv_stride, 0),  # [N, f1, F]
            *conv_bn_relu(f1, f2, kernel_size, 1, "same"),
            nn.MaxPool1d(pool_size),  # [N, f2, F // 4]
            *conv_bn_relu(f2, f3, kernel_size, 1, "same"),
            nn.MaxPool1d(pool_size),  # [N, f3, F // 16]
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # [N, f3 * (F // 16)]
            nn.Linear(self.dense_in, dense_units, bias=not batch_norm),
            nn.BatchNorm1d(dense_units) if batch_norm else nn.Identity(),
            nn.ReLU(),
            nn.Linear(dense_units, num_tags),  # [N, num_tags]
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw sub-clips [N, 1, T] in [-1, 1] -> tag logits [N, num_tags]."""
        return self.classifier(self.features(x))
