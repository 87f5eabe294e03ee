"""The baseline network: shapes for every Table 1 geometry, init, and start-up errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tagger.errors import ConfigError
from tagger.models.dieleman import DielemanCNN
from tagger.module import TaggingModule

# (L, S) -> first dense width on 34,950-sample sub-clips, worked out by hand:
# F = (34950 - L) // S + 1 frames, then two max-pools of 4, times 32 channels.
TABLE1_DENSE_WIDTH = {
    (1024, 1024): 32 * 2,  # F = 34  -> 8  -> 2
    (1024, 512): 32 * 4,  # F = 67  -> 16 -> 4
    (512, 512): 32 * 4,  # F = 68  -> 17 -> 4
    (512, 256): 32 * 8,  # F = 135 -> 33 -> 8
    (256, 256): 32 * 8,  # F = 136 -> 34 -> 8
}


@pytest.mark.parametrize(("length", "stride"), list(TABLE1_DENSE_WIDTH))
def test_table1_geometries_on_coursework_subclips(length: int, stride: int) -> None:
    net = DielemanCNN(num_tags=50, subclip_len=34950, conv_length=length, conv_stride=stride)
    x = torch.randn(10, 1, 34950)
    assert net.dense_in == TABLE1_DENSE_WIDTH[length, stride]
    assert net.features(x).flatten(1).shape == (10, net.dense_in)
    assert net(x).shape == (10, 50)


def test_odd_length_that_pooling_does_not_divide() -> None:
    # 20,001 samples at 256/256: F = 78 frames -> 19 -> 4 (pooling drops the remainders)
    net = DielemanCNN(num_tags=7, subclip_len=20001, conv_length=256, conv_stride=256)
    x = torch.randn(3, 1, 20001)
    assert net.dense_in == 32 * 4
    assert net(x).shape == (3, 7)


def test_module_takes_coursework_batches_and_scores_each_subclip() -> None:
    module = TaggingModule(
        net={"_target_": "tagger.models.dieleman.DielemanCNN", "subclip_len": 34950},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        tag_names=[f"tag{i}" for i in range(50)],
    )
    batch = torch.randint(-32768, 32767, (2, 10, 1, 34950)).float()  # int16 scale
    logits = module(batch)
    assert logits.shape == (2, 10, 50)
    probs = module.predict_clips(batch)
    assert probs.shape == (2, 50) and ((probs > 0) & (probs < 1)).all()


def test_kaiming_init_with_zero_biases_and_batchnorm_switch() -> None:
    net = DielemanCNN(num_tags=50, subclip_len=34950, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    assert all(m.bias is not None and torch.all(m.bias == 0) for m in layers)
    first = layers[0]  # 32 x 1 x 256 weights: std sqrt(2 / 256)
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.1)

    with_bn = DielemanCNN(num_tags=50, subclip_len=34950, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in with_bn.modules()) == 4


def test_stride_longer_than_filter_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"conv\.stride <= conv\.length"):
        DielemanCNN(subclip_len=34950, conv_length=1024, conv_stride=2048)


def test_clip_too_short_for_the_first_layer_says_how_long_it_must_be() -> None:
    # 1024/1024 needs 1024 + 15 * 1024 = 16,384 samples for one frame after both pools
    with pytest.raises(ConfigError, match=r"at least 16384 .*data\.subclip_len"):
        DielemanCNN(subclip_len=16383, conv_length=1024, conv_stride=1024)
    DielemanCNN(subclip_len=16384, conv_length=1024, conv_stride=1024)
