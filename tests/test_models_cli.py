"""``tagger models``: the counts it prints, and the table in docs/models.md being its output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tagger.cli.models import compose_model, format_table, zoo_rows
from tagger.models.dieleman import DielemanCNN
from tagger.models.layers import ResidualBlock
from tagger.models.spectrogram import LogMelSpectrogram
from tagger.zoo import count_multiply_adds, describe
from tests.conftest import REPO_ROOT, run_tagger


def test_multiply_adds_of_conv_and_dense_layers_by_hand() -> None:
    net = nn.Sequential(nn.Conv1d(1, 4, 8, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(60, 3))
    # conv: 15 frames x 4 filters x 8 taps; dense: 3 outputs x 60 inputs
    assert count_multiply_adds(net, 64) == 15 * 4 * 8 + 3 * 60


def test_multiply_adds_of_the_mel_front_end() -> None:
    front_end = LogMelSpectrogram(12000, 256, 128, n_mels=40, log_c=1.0)
    frames = (1024 - 256) // 128 + 1
    per_frame = 256 + 256 * math.log2(256) + 40 * 129  # window, FFT, filterbank
    assert count_multiply_adds(front_end, 1024) == frames * per_frame


def test_multiply_adds_of_a_rese_block_with_its_shortcut_and_gate() -> None:
    block = ResidualBlock(4, 8, kernel_size=3, se_ratio=2, pool=3)
    net = nn.Sequential(nn.Conv1d(1, 4, 1), block)
    # 27 samples: conv 1 (1 -> 4), conv 3 (4 -> 8), conv 3 (8 -> 8), the gate's dense
    # 8 -> 16 -> 8 on the time means, the shortcut's conv 1 (4 -> 8)
    expected = 27 * 4 * 1 + 27 * 8 * 4 * 3 + 27 * 8 * 8 * 3 + (16 * 8 + 8 * 16) + 27 * 8 * 4
    assert count_multiply_adds(net, 27) == expected


def test_a_row_counts_the_network_the_config_builds() -> None:
    row = describe("baseline", compose_model("baseline", ["stride=512"]))
    net = DielemanCNN(num_tags=11, subclip_len=17475, conv_length=512, conv_stride=512)
    assert row.parameters == sum(p.numel() for p in net.parameters())
    assert row.window_len == 17475 and row.sample_rate == 12000 and row.num_tags == 11
    frames = (17475 - 512) // 512 + 1  # 34 -> 8 -> 2 after the pools
    expected = 32 * 512 * frames + 32 * 32 * 8 * (frames + frames // 4) + 100 * 64 + 11 * 100
    assert row.multiply_adds == expected
    assert row.multiply_adds_per_second == pytest.approx(expected * 12000 / 17475)


@pytest.mark.slow  # counts the multiply-adds of every model of the zoo
def test_docs_table_is_the_output_of_tagger_models() -> None:
    table = format_table(zoo_rows())
    docs = (REPO_ROOT / "docs" / "models.md").read_text()
    assert table in docs, "docs/models.md is out of date: paste in the output of `tagger models`"


def test_tagger_models_command(tmp_path: Path) -> None:
    result = run_tagger("models", "samplecnn", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| model ") and lines[2].startswith("| `samplecnn` ")
    assert "59,049 samples" in lines[2]

    result = run_tagger("models", "resnet", cwd=tmp_path)
    assert result.returncode == 2
    assert "no model config 'resnet'" in result.stderr and "samplecnn" in result.stderr


def test_every_window_is_counted_once() -> None:
    # counting leaves the network as it was: a second count gives the same number
    net = nn.Sequential(nn.Conv1d(1, 2, 4, stride=4), nn.Flatten(), nn.Linear(8, 1))
    assert count_multiply_adds(net, 16) == count_multiply_adds(net, 16) == 4 * 2 * 4 + 8
    assert not net[0]._forward_hooks
    assert torch.is_grad_enabled() and net.training
