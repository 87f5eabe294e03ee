"""ReSE-2 with multi-level feature aggregation, from Kim, Lee & Nam (2018),
"Sample-level CNN architectures for music auto-tagging using raw waveforms".

The sample-level CNN of Lee et al. (2017) on windows of 59,049 = 3^10 samples,
its basic blocks replaced by ReSE-2 blocks (``tagger.models.layers.ResidualBlock``):
two convs of size 3 with dropout 0.2 between them, a squeeze-and-excitation gate
(amplifying ratio 16) and a residual connection, then ReLU and max-pool 3. The
outputs of the last three blocks are max-pooled over time and concatenated.

    input            [N, 1, 59049]      raw samples in [-1, 1]
    conv 3, stride 3 [N, 128, 19683]    BN, ReLU
    block 1          [N, 128, 6561]     ReSE-2, max-pool 3
    block 2          [N, 128, 2187]
    block 3          [N, 256, 729]
    blocks 4 to 6    [N, 256, 27]
    block 7          [N, 256, 9]        -> global max-pool [N, 256]
    block 8          [N, 256, 3]        -> global max-pool [N, 256]
    block 9          [N, 512, 1]        -> global max-pool [N, 512]
    concatenate      [N, 1024]
    dense            [N, 1024]          BN, ReLU, dropout 0.5
    dense            [N, num_tags]      logits (the paper's sigmoid is in the loss)

Any window of at least 3^10 samples works: the global pooling makes the dense
layers independent of its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from tagger.errors import ConfigError
from tagger.models.layers import ConvBNReLU, ResidualBlock, init_weights
from tagger.models.samplecnn import PAPER_CHANNELS, sample_level_frames


class ReSE2(nn.Module):
    """Strided conv, ReSE-2 blocks, multi-level aggregation and two dense layers.

    Args:
        num_tags: number of output logits.
        subclip_len: samples per window T (59,049 in the paper).
        channels: widths of the strided conv and of each block (one block per width
            after the first; the paper's nine by default).
        amplifying_ratio: hidden width of each SE gate, as a multiple of its channels.
        block_dropout: dropout probability between the two convs of each block.
        aggregated_blocks: how many of the last blocks feed the dense layers (3: the
            paper's multi-level aggregation; 1: the last block only).
        dropout: dropout probability before the output layer.
    """

    #: the front end that ``model.freeze=front_end`` freezes (``tagger.models.parts``):
    #: the strided conv, its batch norm and ReLU
    FRONT_END = ("stem",)

    def __init__(
        self,
        num_tags: int = 50,
        subclip_len: int = 59049,
        channels: Sequence[int] = PAPER_CHANNELS,
        amplifying_ratio: float = 16.0,
        block_dropout: float = 0.2,
        aggregated_blocks: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        sample_level_frames(subclip_len, len(channels) - 1)
        if not 1 <= aggregated_blocks <= len(channels) - 1:
            raise ConfigError(
                f"model.net.aggregated_blocks must be between 1 and the {len(channels) - 1} "
                f"blocks, not {aggregated_blocks}"
            )
        self.aggregated_blocks = aggregated_blocks
        self.stem = ConvBNReLU(1, channels[0], 3, stride=3)  # [N, 128, T // 3]
        self.blocks = nn.ModuleList(
            ResidualBlock(c_in, c_out, 3, block_dropout, se_ratio=amplifying_ratio, pool=3)
            for c_in, c_out in pairwise(channels)
        )  # block i: [N, channels[i], T // 3^(i + 1)]
        width = sum(channels[-aggregated_blocks:])
        self.classifier = nn.Sequential(
            nn.Linear(width, width, bias=False),  # [N, 1024]
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, num_tags),  # [N, num_tags]
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw windows [N, 1, T] in [-1, 1] -> tag logits [N, num_tags]."""
        x = self.stem(x)
        levels = []
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        pooled = [level.amax(dim=-1) for level in levels[-self.aggregated_blocks :]]
        aggregated = torch.cat(pooled, dim=1)  # [N, 256 + 256 + 512]
        return self.classifier(aggregated)
