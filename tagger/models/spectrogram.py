"""Dieleman & Schrauwen's (2014) comparison model: the strided convolution of the
raw-audio model replaced by a log-compressed mel spectrogram, computed on the fly.

Frames match the raw-audio model's first layer: the frame (window) length is its filter
length L and the hop its stride S, the same hyperparameters under the same names
(``conv_length``, ``conv_stride``; ``conv.length``, ``conv.stride`` in the configs), so one
sweep over ``model=baseline,spectrogram`` fills both columns of the paper's Table 1. The
layers after the front end are the raw-audio model's.

    input            [N, 1, T]          raw samples in [-1, 1]
    STFT             [N, L // 2 + 1, F] |DFT| of Hann-windowed frames, no padding,
                                        F = (T - L) // S + 1; scaled so that a sine
                                        of amplitude a peaks at a
    mel filterbank   [N, n_mels, F]     triangular filters, equally spaced in mel
    log(1 + C·x)     [N, n_mels, F]     C = 10,000 by default
    BatchNorm        [N, n_mels, F]     per band (the input standardisation; optional)
    conv 8 + pool 4  [N, 32, F // 4]    as in ``tagger.models.dieleman``
    conv 8 + pool 4  [N, 32, F // 16]
    flatten, dense   [N, 100]
    dense            [N, num_tags]      logits

The front end has no trainable parameters; gradients stop at its output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tagger.errors import ConfigError
from tagger.models.dieleman import conv_pool_layers, dense_head, pooled_frames
from tagger.models.layers import init_weights


def hz_to_mel(hz: Tensor) -> Tensor:
    """The HTK mel scale: 2595 · log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of ``hz_to_mel``."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> Tensor:
    """Triangular mel filters as a matrix [n_mels, n_fft // 2 + 1] over the rfft's bins.

    Band m rises linearly from edge m to 1 at edge m + 1 and falls back to 0 at edge
    m + 2, where the n_mels + 2 edges are equally spaced in mel from 0 Hz to the Nyquist
    frequency. A band narrower than the bin spacing would catch no bin; it takes the bin
    nearest its centre instead, so no band is always zero.
    """
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_max = hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64)).item()
    edges = mel_to_hz(torch.linspace(0.0, mel_max, n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [n_mels, 1]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    weights = torch.minimum(rising, falling).clamp(min=0)  # [n_mels, n_bins]
    empty = weights.sum(dim=1) == 0
    nearest = (bins - centre).abs().argmin(dim=1)
    weights[empty, nearest[empty]] = 1.0
    return weights.float()


class LogMelSpectrogram(nn.Module):
    """Raw audio [N, 1, T] -> log(1 + C · mel magnitude) [N, n_mels, (T - window) // hop + 1].

    Args:
        sample_rate: of the input, in Hz.
        window_length: STFT window (Hann) and FFT size, in samples.
        hop_length: STFT hop, in samples.
        n_mels: number of mel bands.
        log_c: the compression constant C.
    """

    def __init__(
        self, sample_rate: int, window_length: int, hop_length: int, n_mels: int, log_c: float
    ) -> None:
        super().__init__()
        self.window_length = window_length
        self.hop_length = hop_length
        self.log_c = float(log_c)
        window = torch.hann_window(window_length)
        # constant buffers, rebuilt from the arguments: not part of the state dict
        self.register_buffer("window", window, persistent=False)
        self.register_buffer(
            "mel", mel_filterbank(sample_rate, window_length, n_mels), persistent=False
        )
        self.amplitude_scale = 2.0 / window.sum().item()  # a sine of amplitude a peaks at a

    def forward(self, x: Tensor) -> Tensor:
        spec = torch.stft(
            x.squeeze(1),
            n_fft=self.window_length,
            hop_length=self.hop_length,
            window=self.window,
            center=False,
            return_complex=True,
        )  # [N, window // 2 + 1, F]
        magnitude = spec.abs() * self.amplitude_scale
        mel = torch.matmul(self.mel, magnitude)  # [N, n_mels, F]
        return torch.log1p(self.log_c * mel)


class SpectrogramCNN(nn.Module):
    """Log-mel front end, then Dieleman's conv/pool blocks and dense layers.

    Args:
        num_tags: number of output logits.
        subclip_len: samples per sub-clip T; fixes the first dense layer's width.
        sample_rate: of the audio, in Hz (places the mel bands).
        conv_length: frame length L (the STFT's Hann window and FFT size), in samples.
        conv_stride: hop S between frames, in samples; at most L.
        n_mels: number of mel bands (the front end's channels).
        log_c: C of the log(1 + C·x) compression.
        filters: output channels of the two length-8 convs.
        kernel_size: length of those convs (8 in the paper).
        pool_size: max-pool size after each of them (4 in the paper).
        dense_units: width of the hidden dense layer (100 in the paper).
        batch_norm: BatchNorm on the log-mel bands and after every layer but the output one.
    """

    #: the front end that ``model.freeze=front_end`` freezes (``tagger.models.parts``):
    #: the log-mel spectrogram and the batch norm on its bands
    FRONT_END = ("front_end", "features.0")

    def __init__(
        self,
        num_tags: int = 50,
        subclip_len: int = 34950,
        sample_rate: int = 12000,
        conv_length: int = 256,
        conv_stride: int = 256,
        n_mels: int = 128,
        log_c: float = 10000.0,
        filters: Sequence[int] = (32, 32),
        kernel_size: int = 8,
        pool_size: int = 4,
        dense_units: int = 100,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        pooled = pooled_frames(subclip_len, conv_length, conv_stride, pool_size)
        if n_mels < 1 or log_c <= 0:
            raise ConfigError(
                f"model.net.n_mels ({n_mels}) and model.net.log_c ({log_c}) must be positive"
            )
        f2, f3 = filters
        self.dense_in = f3 * pooled
        self.front_end = LogMelSpectrogram(sample_rate, conv_length, conv_stride, n_mels, log_c)
        self.features = nn.Sequential(
            nn.BatchNorm1d(n_mels) if batch_norm else nn.Identity(),  # [N, n_mels, F]
            *conv_pool_layers(n_mels, (f2, f3), kernel_size, pool_size, batch_norm),
            # [N, f3, F // 16]
        )
        self.classifier = dense_head(self.dense_in, dense_units, num_tags, batch_norm)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw sub-clips [N, 1, T] in [-1, 1] -> tag logits [N, num_tags]."""
        return self.classifier(self.features(self.front_end(x)))
