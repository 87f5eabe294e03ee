"""tagger.perturb: each waveform operation measured on sines and noise."""

from __future__ import annotations

import math

import pytest
import torch

from tagger import perturb

SR = 16000


def sine(freq: float, n: int = SR, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    """A sine of freq Hz, [n] samples."""
    t = torch.arange(n, dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def peak_hz(x: torch.Tensor, sr: int = SR) -> float:
    """Frequency of the largest FFT bin of a 1-D signal (Hann window)."""
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[-1])).abs()
    return float(torch.fft.rfftfreq(x.shape[-1], 1 / sr)[spec.argmax()])


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def level_db(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Level of x relative to ref, in dB (RMS)."""
    return 20 * math.log10(rms(x) / rms(ref))


def test_gain_doubles_at_6_db_and_per_row():
    x = torch.randn(3, 1, 100)
    torch.testing.assert_close(perturb.gain(x, 20 * math.log10(2)), 2 * x)
    db = torch.tensor([0.0, -20.0, 20.0]).view(3, 1, 1)
    out = perturb.gain(x, db)
    torch.testing.assert_close(out, x * torch.tensor([1.0, 0.1, 10.0]).view(3, 1, 1))
    assert out.dtype == x.dtype
    assert perturb.gain(x.bfloat16(), 6.0).dtype == torch.bfloat16


@pytest.mark.parametrize("snr", [0.0, 10.0, 30.0])
def test_add_noise_snr_measured_and_silence_kept(snr):
    x = torch.stack([sine(440), sine(1000, amp=3000.0)])  # [-1, 1] and int16-like scales
    g = torch.Generator().manual_seed(0)
    out = perturb.add_noise(x, snr, generator=g)
    for row, clean in zip(out, x, strict=True):
        noise = row - clean
        measured = 10 * math.log10(clean.pow(2).mean() / noise.pow(2).mean())
        assert abs(measured - snr) < 0.5, (snr, measured)
    silent = torch.zeros(2, 50)
    assert torch.equal(perturb.add_noise(silent, 10.0), silent)


def test_add_noise_per_row_snr_and_generator_repeats():
    x = sine(300).repeat(2, 1)
    snr = torch.tensor([[0.0], [20.0]])
    a = perturb.add_noise(x, snr, torch.Generator().manual_seed(5))
    b = perturb.add_noise(x, snr, torch.Generator().manual_seed(5))
    c = perturb.add_noise(x, snr, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise_db = [10 * math.log10((r - x[0]).pow(2).mean() / x[0].pow(2).mean()) for r in a]
    assert abs(noise_db[0] - 0.0) < 0.5 and abs(noise_db[1] + 20.0) < 0.5


@pytest.mark.parametrize("length", [8000, 24000, 16001])
def test_resample_keeps_cycles(length):
    x = sine(440)  # 440 cycles per row
    y = perturb.resample(x, length)
    assert y.shape == (length,)
    # the same number of cycles in a row of a different length: 440 Hz at rate `length`
    assert abs(peak_hz(y, sr=length) - 440) <= 1.0
    assert abs(rms(y) - rms(x)) < 0.01


def test_resample_downsampling_removes_content_above_new_nyquist():
    x = (sine(440) + sine(6000)).view(1, 1, -1)
    y = perturb.resample(x, 8000)  # new Nyquist: 4 kHz (at 8 kHz)
    assert y.shape == (1, 1, 8000)
    torch.testing.assert_close(y[0, 0], sine(440, n=8000, sr=8000), atol=1e-3, rtol=0)


@pytest.mark.parametrize("rate", [0.8, 1.25, 2.0])
def test_time_stretch_length_and_frequency(rate):
    x = sine(440).view(1, 1, -1).repeat(2, 1, 1)
    y = perturb.time_stretch(x, rate)
    assert y.shape == (2, 1, round(SR / rate))
    middle = y[0, 0, 2048:-2048]
    assert abs(peak_hz(middle) - 440) < SR / middle.shape[-1] * 1.5
    assert 0.95 < rms(middle) / rms(x) < 1.05  # phase locking keeps a sine's level


@pytest.mark.parametrize("semitones, expected", [(12.0, 880.0), (-12.0, 220.0), (3.0, 523.25)])
def test_pitch_shift_moves_the_peak(semitones, expected):
    x = sine(440).view(1, -1)
    y = perturb.pitch_shift(x, semitones)
    assert y.shape == x.shape
    middle = y[0, 2048:-2048]
    assert abs(peak_hz(middle) - expected) < 3.0, peak_hz(middle)
    assert 0.9 < rms(middle) / rms(x) < 1.1


def test_pitch_shift_zero_is_identity():
    x = torch.randn(2, 500)
    assert torch.equal(perturb.pitch_shift(x, 0.0), x)


@pytest.mark.parametrize("semitones", [2.0, -2.0, 12.0, 24.0])
def test_speed_moves_the_peak_and_keeps_the_length(semitones):
    factor = 2 ** (semitones / 12)
    x = sine(440).view(1, 1, -1)
    y = perturb.speed(x, factor)
    assert y.shape == x.shape
    head = y[0, 0, : int(SR / max(factor, 1)) - 1]  # the part read forwards
    assert abs(peak_hz(head) - 440 * factor) < 2 * SR / head.shape[-1] + 1
    assert 0.9 < rms(y) / rms(x) < 1.1
    assert (y[0, 0, 1:] - y[0, 0, :-1]).abs().max() < 0.5 * 2 * math.pi * 440 * factor / SR * 1.1
    assert torch.equal(perturb.speed(x, 1.0), x)


def test_short_rows_stretch_and_shift():
    x = torch.randn(4, 1, 300)
    assert perturb.pitch_shift(x, 2.0).shape == x.shape
    assert perturb.time_stretch(x, 1.5).shape == (4, 1, 200)


def test_lowpass_highpass_bandpass_attenuate_and_pass():
    low, mid, high = sine(200), sine(1000), sine(5000)
    x = torch.stack([low, mid, high])
    lp = perturb.lowpass(x, 1000.0, SR)
    assert abs(level_db(lp[0], low)) < 0.1  # well below the cutoff: passed
    assert abs(level_db(lp[1], mid) + 3.01) < 0.1  # at the cutoff: -3 dB
    assert level_db(lp[2], high) < -20  # above: attenuated
    hp = perturb.highpass(x, 1000.0, SR)
    assert level_db(hp[0], low) < -20 and abs(level_db(hp[2], high)) < 0.1
    bp = perturb.bandpass(x, 500.0, 2000.0, SR)
    assert level_db(bp[0], low) < -20 and level_db(bp[2], high) < -20
    assert abs(level_db(bp[1], mid)) < 0.2


def test_filters_take_a_cutoff_per_row():
    x = sine(3000).view(1, 1, -1).repeat(2, 1, 1)
    cut = torch.tensor([500.0, 8000.0]).view(2, 1, 1)
    out = perturb.lowpass(x, cut, SR)
    assert out.shape == x.shape
    assert level_db(out[0, 0], x[0, 0]) < -20 and abs(level_db(out[1, 0], x[1, 0])) < 0.1


def test_bandpass_with_an_open_side_is_a_lowpass_or_highpass_per_row():
    x = torch.stack([sine(200), sine(5000)]).view(2, 1, -1)
    low = torch.tensor([0.0, 1000.0]).view(2, 1, 1)
    high = torch.tensor([1000.0, math.inf]).view(2, 1, 1)
    out = perturb.bandpass(x, low, high, SR)
    torch.testing.assert_close(out[0], perturb.lowpass(x[0], 1000.0, SR))
    torch.testing.assert_close(out[1], perturb.highpass(x[1], 1000.0, SR))
    assert abs(level_db(out[0, 0], x[0, 0])) < 0.1 and abs(level_db(out[1, 0], x[1, 0])) < 0.1
    torch.testing.assert_close(perturb.bandpass(x, 0.0, math.inf, SR), x, atol=1e-6, rtol=0)


def test_dtype_kept_in_bfloat16():
    x = torch.randn(2, 1, 2048).bfloat16()
    for out in (
        perturb.add_noise(x, 10.0),
        perturb.resample(x, 1000),
        perturb.pitch_shift(x, 1.0),
        perturb.lowpass(x, 1000.0, SR),
        perturb.bandpass(x, 100.0, 1000.0, SR),
    ):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_bad_arguments_refused():
    with pytest.raises(ValueError, match="rate"):
        perturb.time_stretch(torch.randn(100), 0.0)
    with pytest.raises(ValueError, match="length"):
        perturb.resample(torch.randn(100), 0)
    with pytest.raises(ValueError, match="16 samples"):
        perturb.pitch_shift(torch.randn(2, 10), 1.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_strengths_are_refused_not_turned_into_nan_audio(value: float) -> None:
    x = torch.randn(2, 1, 256)
    for name, apply in [
        ("gain: db", lambda: perturb.gain(x, value)),
        ("noise: snr_db", lambda: perturb.add_noise(x, value)),
        ("time_stretch: rate", lambda: perturb.time_stretch(x, value)),
        ("pitch_shift: semitones", lambda: perturb.pitch_shift(x, value)),
        ("speed: factor", lambda: perturb.speed(x, value)),
    ]:
        with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
            apply()


def test_fast_length_is_the_next_5_smooth_size():
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in [*range(1, 400), 34950, 4097]:
        size = perturb.fast_length(n)
        assert size >= n and smooth(size)
        assert not any(smooth(k) for k in range(n, size))
    assert perturb.fast_length(34950) == 34992
