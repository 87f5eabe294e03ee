"""The model zoo: every ``model=NAME`` config builds, learns and survives a checkpoint;
the ablation options of Dieleman's Tables 2 and 3 and the mel front end do what they say."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from tagger.cli.models import compose_model
from tagger.errors import ConfigError
from tagger.models.dieleman import DielemanCNN, FeaturePool, Log1p
from tagger.models.hybrid import HybridCNN
from tagger.models.rese import ReSE2
from tagger.models.samplecnn import SampleCNN
from tagger.models.spectrogram import LogMelSpectrogram, SpectrogramCNN, mel_filterbank
from tagger.module import load_trained
from tagger.train import train
from tagger.zoo import build_net, model_names

#: model name -> its network class and default window (samples) on the built-in data
ZOO: dict[str, tuple[type[nn.Module], int]] = {
    "baseline": (DielemanCNN, 17475),
    "spectrogram": (SpectrogramCNN, 17475),
    "wide": (DielemanCNN, 17475),
    "hybrid": (HybridCNN, 17475),
    "samplecnn": (SampleCNN, 59049),
    "rese2": (ReSE2, 59049),
}
SAMPLE_LEVEL = {"samplecnn", "rese2"}
#: models whose tiny-batch overfit takes more than about 2 s on two CPU cores (`make test-all`)
SLOW_TO_OVERFIT = SAMPLE_LEVEL | {"wide", "hybrid"}
#: quarter widths for training the two big sample-level models in tests (same depth, window
#: and blocks), so each run takes seconds rather than minutes on two CPU cores
NARROW = ["model.net.channels=[32,32,32,64,64,64,64,64,64,128]"]
NUM_TAGS = 5
STEP_BUDGET = 40


def test_every_model_config_is_covered() -> None:
    assert sorted(ZOO) == model_names()


def _net(name: str, *overrides: str) -> tuple[nn.Module, DictConfig]:
    torch.manual_seed(0)
    cfg = compose_model(name, overrides)
    return build_net(cfg, NUM_TAGS), cfg


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.slow) if name in SAMPLE_LEVEL else name for name in ZOO],
)
def test_default_window_shape_and_gradients_reach_the_first_layer(name: str) -> None:
    net, cfg = _net(name)
    cls, window = ZOO[name]
    assert isinstance(net, cls) and cfg.data.subclip_len == window
    x = torch.rand(2, 1, window) * 2 - 1
    logits = net(x)
    assert logits.shape == (2, NUM_TAGS)
    binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    first = next(m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.BatchNorm1d)))
    grad = first.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_wide_model_has_1024_filters_in_its_second_conv_layer() -> None:
    net, _ = _net("wide")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv1d)]
    assert [conv.out_channels for conv in convs] == [32, 1024, 32]


def _overfit(net: nn.Module, window: int) -> tuple[float, float]:
    """Adam on one fixed batch of 4 windows; (first loss, loss when a tenth was reached or
    after STEP_BUDGET steps)."""
    x = torch.rand(4, 1, window) * 2 - 1
    y = torch.randint(0, 2, (4, NUM_TAGS)).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    first = math.nan
    for step in range(STEP_BUDGET):
        loss = binary_cross_entropy_with_logits(net(x), y)
        if step == 0:
            first = loss.item()
        elif loss.item() < first / 10:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return first, loss.item()


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TO_OVERFIT else name
     for name in ZOO],
)  # fmt: skip
def test_overfits_a_tiny_batch(name: str) -> None:
    net, cfg = _net(name, *(NARROW if name in SAMPLE_LEVEL else []))
    first, last = _overfit(net, cfg.data.subclip_len)
    assert last < first / 10, f"{name}: loss {first:.3f} -> {last:.3f} in {STEP_BUDGET} steps"


# --- Dieleman's ablations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("nonlinearity", "formula"),
    [
        ("log1p_sq", lambda h, c: torch.log(1 + c * h**2)),
        ("log1p_abs", lambda h, c: torch.log(1 + c * h.abs())),
        ("relu", lambda h, c: h.clamp(min=0)),
    ],
)
def test_first_layer_nonlinearity_computes_its_formula(
    nonlinearity: str, formula: Callable[[torch.Tensor, float], torch.Tensor]
) -> None:
    c = 37.5
    net = DielemanCNN(
        num_tags=3, subclip_len=8192, batch_norm=False, nonlinearity=nonlinearity, log_c=c
    )
    x = torch.rand(2, 1, 8192) * 2 - 1
    conv, activation = net.features[0], net.features[2]
    assert isinstance(activation, Log1p if nonlinearity != "relu" else nn.ReLU)
    h = conv(x)  # [2, 32, 32] linear responses
    torch.testing.assert_close(net.features[:3](x), formula(h, c), rtol=1e-6, atol=1e-6)
    assert net(x).shape == (2, 3)


@pytest.mark.parametrize("mode", ["l2", "max"])
@pytest.mark.parametrize("size", [2, 4])
def test_feature_pooling_divides_the_first_layer_channels(mode: str, size: int) -> None:
    net = DielemanCNN(num_tags=3, subclip_len=8192, feature_pool=mode, feature_pool_size=size)
    x = torch.rand(2, 1, 8192) * 2 - 1
    net.eval()
    responses = net.features[:2](x)  # conv + BatchNorm: [2, 32, F]
    pool = net.features[2]
    assert isinstance(pool, FeaturePool)
    pooled = pool(responses)
    assert pooled.shape == (2, 32 // size, responses.shape[-1])
    groups = responses.view(2, 32 // size, size, -1)
    expected = groups.pow(2).sum(2).sqrt() if mode == "l2" else groups.max(2).values
    torch.testing.assert_close(pooled, expected)
    assert net.features[4].in_channels == 32 // size  # the next conv reads the pooled filters
    assert net(x).shape == (2, 3)


def test_feature_pool_size_must_divide_the_filters() -> None:
    with pytest.raises(ConfigError, match=r"feature_pool_size"):
        DielemanCNN(subclip_len=8192, feature_pool="max", feature_pool_size=3)


def test_unknown_ablation_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.net\.nonlinearity"):
        DielemanCNN(subclip_len=8192, nonlinearity="tanh")
    with pytest.raises(ConfigError, match=r"model\.net\.feature_pool "):
        DielemanCNN(subclip_len=8192, feature_pool="mean")


# --- the mel front end ----------------------------------------------------------------


def _reference_triangle(f: float, sample_rate: int, n_mels: int) -> np.ndarray:
    """Each HTK mel band's triangle evaluated at frequency f, in numpy."""
    mel = 2595 * np.log10(1 + np.array([0.0, sample_rate / 2]) / 700)
    edges = 700 * (10 ** (np.linspace(mel[0], mel[1], n_mels + 2) / 2595) - 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    return np.clip(
        np.minimum((f - lower) / (centre - lower), (upper - f) / (upper - centre)), 0, None
    )


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3150.0])
def test_log_mel_of_a_pure_tone_matches_a_numpy_reference(freq: float) -> None:
    sr, window, hop, n_mels, c = 12000, 512, 256, 40, 10000.0
    t = np.arange(8192) / sr
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    front_end = LogMelSpectrogram(sr, window, hop, n_mels, c)
    out = front_end(torch.tensor(tone, dtype=torch.float32).view(1, 1, -1))[0]  # [40, F]

    # reference: numpy rfft of Hann-windowed frames, the same filterbank, log(1 + C·x)
    frames = np.lib.stride_tricks.sliding_window_view(tone, window)[::hop]  # [F, 512]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)  # periodic
    magnitude = np.abs(np.fft.rfft(frames * hann, axis=1)) * 2 / hann.sum()  # [F, 257]
    assert magnitude.max() == pytest.approx(0.5, rel=0.1)  # a sine of amplitude a peaks at a
    reference = np.log1p(c * magnitude @ mel_filterbank(sr, window, n_mels).numpy().T)
    assert out.shape == (n_mels, len(frames))
    # float32 rounding (~1e-7), times C = 10^4, is what remains where a band is nearly silent
    np.testing.assert_allclose(out.numpy(), reference.T, rtol=1e-4, atol=3e-3)

    # the peak lands in the band whose triangle is highest at the tone's frequency
    expected_band = int(np.argmax(_reference_triangle(freq, sr, n_mels)))
    assert (out.argmax(dim=0) == expected_band).all()


def test_mel_filterbank_leaves_no_band_empty() -> None:
    # 128 bands over 129 bins: the lowest bands are narrower than a bin
    bank = mel_filterbank(12000, 256, 128)
    assert bank.shape == (128, 129)
    assert (bank.sum(dim=1) > 0).all() and (bank >= 0).all() and bank.max() <= 1


# --- start-up checks ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SampleCNN, ReSE2])
def test_sample_level_models_refuse_short_windows(cls: type[nn.Module]) -> None:
    with pytest.raises(ConfigError, match=r"at least 59049 .*data\.subclip_len=59049"):
        cls(subclip_len=59048)


@pytest.mark.parametrize("cls", [SpectrogramCNN, HybridCNN])
def test_frame_models_refuse_windows_too_short_for_their_pooling(cls: type[nn.Module]) -> None:
    with pytest.raises(ConfigError, match=r"at least 4096 .*data\.subclip_len"):
        cls(subclip_len=4095)


# --- checkpoints ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_trained_model_is_rebuilt_from_its_checkpoint_alone(
    name: str, train_config: Callable[..., DictConfig]
) -> None:
    # TINY's windows are too short for the sample-level models: give them theirs (narrowed)
    window = (
        ["data.subclip_len=59049", "data.n_subclips=1", *NARROW] if name in SAMPLE_LEVEL else []
    )
    cfg = train_config(
        f"model={name}",
        *window,
        "data.train_clips=4",
        "data.val_clips=2",
        "data.test_clips=2",
        "data.batch_size=2",
    )
    summary = train(cfg)
    model, run_config = load_trained(summary["checkpoints"]["last"])
    assert isinstance(model.net, ZOO[name][0])
    assert run_config["model"]["net"]["_target_"] == cfg.model.net._target_
    checkpoint = torch.load(summary["checkpoints"]["last"], weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][key])
    audio = torch.zeros(1, cfg.data.n_subclips, 1, cfg.data.subclip_len)
    assert model.predict_clips(audio).shape == (1, len(summary["tag_names"]))
