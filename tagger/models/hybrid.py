"""The replication paper's residual-dropout hybrid: Dieleman & Schrauwen's (2014)
raw-audio model grown to 5 convolution layers and 2 dense layers, with a residual
block that holds dropout between the 4th and 5th convolutions (Zhang & Dong,
"A replication of an end-to-end learning architecture for music audio tagging",
section J.3).

The paper's figures of the architecture are not available; from its description
("5 convolutional layers, 2 fully connected layers, and a ResNet dropout layer",
"Dropout between the fourth and fifth convolutional layers", "the number of
kernels" kept), the layers are:

    input            [N, 1, T]          raw samples in [-1, 1]
    conv 1 (strided) [N, 32, F]         32 filters of length L, stride S, BN, ReLU
                                        F = (T - L) // S + 1
    conv 2 + pool 4  [N, 32, F // 4]    length 8, 'same' padding, BN, ReLU, max-pool 4
    conv 3 + pool 4  [N, 32, F // 16]   the same
    residual block   [N, 32, F // 16]   x + BN(conv 5(dropout(ReLU(BN(conv 4(x)))))), ReLU;
                                        convs 4 and 5 of length 8, 'same' padding
    flatten          [N, 32 * (F // 16)]
    dense            [N, 100]           BN, ReLU
    dense            [N, num_tags]      logits

Conv 1 to 3 and the dense layers are exactly the baseline's, so the hybrid differs
from it only by the residual block. The dropout rate is not given; 0.5 (PyTorch's
default) is assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tagger.models.dieleman import conv_pool_layers, dense_head, pooled_frames
from tagger.models.layers import ConvBNReLU, ResidualBlock, init_weights


class HybridCNN(nn.Module):
    """Dieleman's layers plus a residual block with dropout; see the module docstring.

    Args:
        num_tags: number of output logits.
        subclip_len: samples per sub-clip T; fixes the first dense layer's width.
        conv_length: first-layer filter length L, in samples.
        conv_stride: first-layer stride S, in samples; at most L.
        filters: output channels of convs 1, 2 and 3; the residual block keeps the last.
        kernel_size: length of convs 2 to 5.
        pool_size: max-pool size after convs 2 and 3.
        dropout: dropout probability between convs 4 and 5.
        dense_units: width of the hidden dense layer.
    """

    #: the front end that ``model.freeze=front_end`` freezes (``tagger.models.parts``):
    #: the strided conv, its batch norm and ReLU
    FRONT_END = ("features.0",)

    def __init__(
        self,
        num_tags: int = 50,
        subclip_len: int = 34950,
        conv_length: int = 256,
        conv_stride: int = 256,
        filters: Sequence[int] = (32, 32, 32),
        kernel_size: int = 8,
        pool_size: int = 4,
        dropout: float = 0.5,
        dense_units: int = 100,
    ) -> None:
        super().__init__()
        pooled = pooled_frames(subclip_len, conv_length, conv_stride, pool_size)
        f1, f2, f3 = filters
        self.dense_in = f3 * pooled
        self.features = nn.Sequential(
            ConvBNReLU(1, f1, conv_length, stride=conv_stride),  # [N, f1, F]
            *conv_pool_layers(f1, (f2, f3), kernel_size, pool_size, batch_norm=True),
            # [N, f3, F // 16]
            ResidualBlock(f3, f3, kernel_size, dropout=dropout),  # [N, f3, F // 16]
        )
        self.classifier = dense_head(self.dense_in, dense_units, num_tags, batch_norm=True)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw sub-clips [N, 1, T] in [-1, 1] -> tag logits [N, num_tags]."""
        return self.classifier(self.features(x))
