"""The sample-level CNN of Lee, Park, Kim & Nam (2017), "Sample-level deep
convolutional neural networks for music auto-tagging using raw waveforms": the
3^9 model of its Table 1, on windows of 59,049 = 3^10 samples.

    input            [N, 1, 59049]      raw samples in [-1, 1]
    conv 3, stride 3 [N, 128, 19683]    BN, ReLU
    block 1          [N, 128, 6561]     each block: conv 3 ('same'), BN, ReLU, max-pool 3
    block 2          [N, 128, 2187]
    block 3          [N, 256, 729]
    blocks 4 to 8    [N, 256, 3]
    block 9          [N, 512, 1]
    conv 1           [N, 512, 1]        BN, ReLU
    dropout 0.5, flatten [N, 512]
    dense            [N, num_tags]      logits (the paper's sigmoid is in the loss)

Longer windows leave T // 3^10 frames at the end, which are flattened together.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from tagger.errors import ConfigError
from tagger.models.layers import ConvBNReLU, init_weights

#: The paper's widths: the strided conv's, then the nine blocks'.
PAPER_CHANNELS: tuple[int, ...] = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512)


def sample_level_frames(subclip_len: int, n_blocks: int) -> int:
    """Frames left after the stride-3 conv and ``n_blocks`` max-pools of 3: T // 3^(n + 1).

    Raises ConfigError when the window is too short to leave one.
    """
    needed = 3 ** (n_blocks + 1)
    if subclip_len < needed:
        raise ConfigError(
            f"a sample-level model with {n_blocks} blocks needs windows of at least {needed} "
            f"samples, not {subclip_len} (set data.subclip_len={needed})"
        )
    return subclip_len // needed


class SampleCNN(nn.Module):
    """Strided conv 3, blocks of conv 3 + max-pool 3, conv 1, dropout, dense.

    Args:
        num_tags: number of output logits.
        subclip_len: samples per window T (59,049 in the paper).
        channels: widths of the strided conv and of each block (one block per width
            after the first; the paper's nine by default).
        final_channels: width of the last, 1-wide conv.
        dropout: dropout probability before the output layer.
    """

    #: the front end that ``model.freeze=front_end`` freezes (``tagger.models.parts``):
    #: the strided conv, its batch norm and ReLU
    FRONT_END = ("features.0",)

    def __init__(
        self,
        num_tags: int = 50,
        subclip_len: int = 59049,
        channels: Sequence[int] = PAPER_CHANNELS,
        final_channels: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        frames = sample_level_frames(subclip_len, len(channels) - 1)
        self.features = nn.Sequential(
            ConvBNReLU(1, channels[0], 3, stride=3),  # [N, 128, T // 3]
            *(
                ConvBNReLU(c_in, c_out, 3, padding="same", pool=3)
                for c_in, c_out in pairwise(channels)
            ),  # block i: [N, channels[i], T // 3^(i + 1)]
            ConvBNReLU(channels[-1], final_channels, 1),  # [N, 512, T // 3^10]
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Flatten(),  # [N, 512 * frames]
            nn.Linear(final_channels * frames, num_tags),  # [N, num_tags]
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw windows [N, 1, T] in [-1, 1] -> tag logits [N, num_tags]."""
        return self.classifier(self.features(x))
