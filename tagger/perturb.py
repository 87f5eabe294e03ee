"""Batched waveform perturbations in plain torch, on whatever device the audio is on.

``x`` is float audio ``[..., T]`` (any leading dims, e.g. ``[N, 1, T]`` or ``[N, T]``);
every function returns a tensor of the same dtype and device. The scale does not matter
(``[-1, 1]`` or int16's ``[-32768, 32767]`` as float): scaling ``x`` scales every result
alike (the noise functions measure each row's own power). Spectral work (FFT, STFT) runs
in float32 and is cast back, so bf16/fp16 audio works too.

Why not torch-audiomentations: its 0.12.0 release needs torchaudio (built for one exact
torch version, here torch 2.13.0, and in maintenance mode), julius and torch-pitch-shift;
it draws its random numbers from Python's and torch's global generators (so per-rank,
per-step repeatable draws would need global-state juggling), and its pitch shift works
one example at a time. These functions take an explicit ``torch.Generator`` where they
draw, and work on whole batches; :mod:`tagger.augment` composes them into training
augmentation.

``speed`` is the cheap alternative to ``pitch_shift`` (pitch and tempo change together);
``noise`` is the noise ``add_noise`` adds, for adding it in place.

Filters are zero-phase and applied in the frequency domain over the whole row (FFT of
the row zero-padded to a fast length, multiplied by a Butterworth magnitude response,
inverse FFT), so each example may have its own cutoff at no extra cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Scalar = float | Tensor


def _finite(name: str, value: float) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` when it is NaN or infinite (a NaN
    strength would make NaN audio, scored as if it were sound)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _as_factor(value: Scalar, x: Tensor, name: str | None = None) -> Tensor | float:
    """A float stays a float (refused when NaN or infinite, given the setting's ``name``;
    a filter's open side is infinite); a tensor moves to x's device in float32 (broadcast
    on [..., 1])."""
    if isinstance(value, Tensor):
        return value.to(device=x.device, dtype=torch.float32)
    return float(value) if name is None else _finite(name, value)


def gain(x: Tensor, db: Scalar) -> Tensor:
    """x [..., T] scaled by ``db`` decibels (amplitude factor 10 ** (db / 20)).

    ``db`` is a float or a tensor broadcastable to ``x[..., :1]`` (one gain per row).
    """
    factor = 10.0 ** (_as_factor(db, x, "gain: db") / 20.0)
    return (x.float() * factor).to(x.dtype)


def noise(x: Tensor, snr_db: Scalar, generator: torch.Generator | None = None) -> Tensor:
    """The float32 noise :func:`add_noise` adds to x [..., T]: white Gaussian, ``snr_db``
    dB below each row's mean power (zero for a silent row)."""
    xf = x.float()
    rms = torch.linalg.vector_norm(xf, dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
    scale = rms / 10.0 ** (_as_factor(snr_db, x, "noise: snr_db") / 20.0)
    white = torch.randn(xf.shape, generator=generator, device=x.device, dtype=torch.float32)
    return white.mul_(scale)


def add_noise(x: Tensor, snr_db: Scalar, generator: torch.Generator | None = None) -> Tensor:
    """x [..., T] plus white Gaussian noise ``snr_db`` dB below each row's mean power.

    ``snr_db`` is a float or a tensor broadcastable to ``x[..., :1]``. Silent rows (power 0)
    stay silent. ``generator`` (on x's device) makes the noise repeatable.
    """
    return noise(x, snr_db, generator).add_(x.float()).to(x.dtype)


def resample(x: Tensor, length: int) -> Tensor:
    """Band-limited resampling by FFT: [..., T] -> [..., length], amplitude kept.

    The spectrum is truncated (downsampling: content above the new Nyquist frequency is
    removed) or zero-padded (upsampling), so a sine of k cycles per row keeps k cycles.
    """
    length = int(length)
    if length < 1:
        raise ValueError(f"resample: length must be >= 1, got {length}")
    n = x.shape[-1]
    if length == n:
        return x
    spec = torch.fft.rfft(x.float(), dim=-1)
    bins = length // 2 + 1
    if bins <= spec.shape[-1]:
        spec = spec[..., :bins]
    else:
        spec = torch.nn.functional.pad(spec, (0, bins - spec.shape[-1]))
    return (torch.fft.irfft(spec, n=length, dim=-1) * (length / n)).to(x.dtype)


def _stft_size(n_samples: int, n_fft: int) -> int:
    """n_fft, shrunk to the largest power of two that fits a row of n_samples (>= 16)."""
    if n_samples < 16:
        raise ValueError(f"time_stretch needs rows of >= 16 samples, got {n_samples}")
    return min(n_fft, 1 << (n_samples.bit_length() - 1))


def _lock_phases(mag: Tensor, phase: Tensor, analysis: Tensor) -> Tensor:
    """Identity phase locking (Laroche & Dolson, 1999) of phase-vocoder frames [..., F, S].

    Each bin takes the synthesized phase of its nearest magnitude peak plus its own analysis
    phase offset from that peak, so the bins of one partial stay coherent (without it, a
    pure sine stretched by rate < 1 loses half its level to the start's reflect padding).
    """
    n_freq = mag.shape[-2]
    edge = torch.full_like(mag[..., :1, :], -1.0)
    before = torch.cat([edge, mag[..., :-1, :]], dim=-2)
    after = torch.cat([mag[..., 1:, :], edge], dim=-2)
    peak = (mag >= before) & (mag > after)
    bins = torch.arange(n_freq, device=mag.device).view(n_freq, 1).expand_as(mag)
    prev = torch.where(peak, bins, -1).cummax(dim=-2).values
    nxt = torch.where(peak, bins, n_freq).flip(-2).cummin(dim=-2).values.flip(-2)
    use_prev = (prev >= 0) & ((nxt >= n_freq) | (bins - prev <= nxt - bins))
    owner = torch.where(use_prev, prev, nxt)
    owner = torch.where((owner < 0) | (owner >= n_freq), bins, owner)
    return phase.gather(-2, owner) + analysis - analysis.gather(-2, owner)


def time_stretch(x: Tensor, rate: float, n_fft: int = 1024) -> Tensor:
    """Phase-vocoder time stretch, pitch kept: [..., T] -> [..., round(T / rate)].

    ``rate > 1`` plays faster (shorter output). One rate for the whole tensor. STFT with a
    Hann window of ``n_fft`` samples (fewer for rows shorter than that) and hop n_fft // 4;
    the phase vocoder follows librosa's and torchaudio's ``phase_vocoder``, with identity
    phase locking added (:func:`_lock_phases`).
    """
    rate = _finite("time_stretch: rate", rate)
    if rate <= 0:
        raise ValueError(f"time_stretch: rate must be > 0, got {rate}")
    if rate == 1.0:
        return x
    shape, n = x.shape, x.shape[-1]
    out_len = max(1, round(n / rate))
    n_fft = _stft_size(n, n_fft)
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=x.device)
    flat = x.float().reshape(-1, n)
    spec = torch.stft(flat, n_fft, hop, window=window, center=True, return_complex=True)
    n_freq, n_frames = spec.shape[-2], spec.shape[-1]
    steps = torch.arange(0, n_frames, rate, device=x.device, dtype=torch.float32)
    alphas = (steps % 1.0)[None, None]
    idx = steps.long()
    spec = torch.nn.functional.pad(spec, (0, 2))
    s0, s1 = spec[..., idx], spec[..., idx + 1]
    advance = torch.linspace(0, math.pi * hop, n_freq, device=x.device)[None, :, None]
    phase = s1.angle() - s0.angle() - advance
    phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi)) + advance
    phase = torch.cat([spec[..., :1].angle(), phase[..., :-1]], dim=-1)
    mag = alphas * s1.abs() + (1 - alphas) * s0.abs()
    nearest = torch.where(alphas < 0.5, s0, s1).angle()
    stretched = torch.polar(mag, _lock_phases(mag, phase.cumsum(dim=-1), nearest))
    y = torch.istft(stretched, n_fft, hop, window=window, center=True, length=out_len)
    return y.reshape(*shape[:-1], out_len).to(x.dtype)


def pitch_shift(x: Tensor, semitones: float, n_fft: int = 1024) -> Tensor:
    """x [..., T] shifted by ``semitones`` (one value for the whole tensor), duration kept.

    Time-stretch by 2 ** (semitones / 12) (longer for a higher pitch), then resample back
    to T samples, which raises every frequency by that factor.
    """
    semitones = _finite("pitch_shift: semitones", semitones)
    if semitones == 0.0:
        return x
    n = x.shape[-1]
    return resample(time_stretch(x, 2.0 ** (-semitones / 12.0), n_fft), n)


def _reflected(x: Tensor, length: int) -> Tensor:
    """x [..., T] continued backwards from its end, then forwards again, ...: [..., length]."""
    n = x.shape[-1]
    if length - n < n:  # the usual case: one reflection
        return torch.nn.functional.pad(x, (0, length - n), mode="reflect")
    parts, total, backwards = [x], n, True
    while total < length:
        parts.append((x.flip(-1) if backwards else x)[..., 1:])
        total, backwards = total + n - 1, not backwards
    return torch.cat(parts, dim=-1)[..., :length].contiguous()


def speed(x: Tensor, factor: float) -> Tensor:
    """x [..., T] played ``factor`` times faster, as a tape would be, length kept: pitch and
    tempo both change by ``factor`` (2 ** (semitones / 12) for a shift in semitones).

    The first round(T * factor) samples are linearly interpolated onto T; a faster row
    (factor > 1) is continued backwards from its end (reflected), so there is no jump.
    Far cheaper than :func:`pitch_shift` (one interpolation pass), without its
    anti-aliasing: meant for shifts of a few semitones.
    """
    factor = _finite("speed: factor", factor)
    if factor <= 0:
        raise ValueError(f"speed: factor must be > 0, got {factor}")
    n = x.shape[-1]
    need = max(2, round(n * factor))
    if need == n or n < 2:
        return x
    rows = x.float().reshape(-1, 1, n)
    source = _reflected(rows, need) if need > n else rows[..., :need].contiguous()
    out = torch.nn.functional.interpolate(source, size=n, mode="linear", align_corners=True)
    return out.reshape(x.shape).to(x.dtype)


def fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT length as fast as a power of two, or nearly."""
    best = 1 << max(n - 1, 0).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            size = threes << max(0, (n - 1) // threes).bit_length()  # threes * 2^k >= n
            best = min(best, size)
            threes *= 3
        fives *= 5
    return best


def _filtered(x: Tensor, sample_rate: float, response: Callable[[Tensor], Tensor]) -> Tensor:
    """x [..., T] with its spectrum multiplied by ``response(freqs in Hz)`` (real, [..., F]):
    zero-phase, computed over the row zero-padded to ``fast_length(T)``."""
    n = x.shape[-1]
    size = fast_length(n)
    freqs = torch.fft.rfftfreq(size, d=1.0 / sample_rate, device=x.device)
    spec = torch.fft.rfft(x.float(), n=size, dim=-1)
    torch.view_as_real(spec).mul_(response(freqs).unsqueeze(-1))  # real gain, in place
    return torch.fft.irfft(spec, n=size, dim=-1)[..., :n].to(x.dtype)


def _even_power(ratio: Tensor, order: int) -> Tensor:
    """ratio ** (2 order) by repeated multiplication (a float power is several times dearer)."""
    square = ratio * ratio
    result = square
    for _ in range(order - 1):
        result = result * square
    return result


def _low_response(freqs: Tensor, cutoff: Tensor | float, order: int) -> Tensor:
    """Butterworth low-pass magnitude 1 / sqrt(1 + (f / fc) ** (2 order)), -3 dB at fc."""
    return (1.0 + _even_power(freqs / cutoff, order)).rsqrt_()


def _high_response(freqs: Tensor, cutoff: Tensor | float, order: int) -> Tensor:
    """Butterworth high-pass magnitude 1 / sqrt(1 + (fc / f) ** (2 order)): 0 at DC, except
    for fc = 0 (all frequencies passed)."""
    nonzero = freqs.clamp_min(torch.finfo(torch.float32).tiny)
    return (1.0 + _even_power(cutoff / nonzero, order)).rsqrt_()


def lowpass(x: Tensor, cutoff_hz: Scalar, sample_rate: float, order: int = 4) -> Tensor:
    """Zero-phase Butterworth-magnitude low-pass of x [..., T] (-3 dB at cutoff_hz).

    ``cutoff_hz``: float or tensor broadcastable to ``x[..., :1]``. ``order`` 4 falls
    24 dB per octave above the cutoff.
    """
    cutoff = _as_factor(cutoff_hz, x)
    return _filtered(x, sample_rate, lambda freqs: _low_response(freqs, cutoff, order))


def highpass(x: Tensor, cutoff_hz: Scalar, sample_rate: float, order: int = 4) -> Tensor:
    """Zero-phase Butterworth-magnitude high-pass of x [..., T] (-3 dB at cutoff_hz)."""
    cutoff = _as_factor(cutoff_hz, x)
    return _filtered(x, sample_rate, lambda freqs: _high_response(freqs, cutoff, order))


def bandpass(
    x: Tensor, low_hz: Scalar, high_hz: Scalar, sample_rate: float, order: int = 4
) -> Tensor:
    """Zero-phase band-pass of x [..., T]: high-pass at low_hz times low-pass at high_hz.

    Both are floats or tensors broadcastable to ``x[..., :1]``; ``low_hz=0`` or
    ``high_hz=inf`` leaves that side open, so one call can low-pass some rows, high-pass
    others and band-pass the rest (one FFT for all).
    """
    low, high = _as_factor(low_hz, x), _as_factor(high_hz, x)
    return _filtered(
        x,
        sample_rate,
        lambda freqs: _high_response(freqs, low, order) * _low_response(freqs, high, order),
    )
