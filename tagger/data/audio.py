"""Decoding audio files to fixed-length mono int16 clips (soundfile to decode, soxr to resample).

soundfile's libsndfile reads wav, flac, ogg and mp3 (libsndfile >= 1.1, as in the PyPI
wheels). A file that cannot become a clip raises ``AudioError`` with a short reason,
which ``tagger prepare`` records in the store's list of skipped files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

#: int16 full scale: a float sample in [-1, 1) times this is a store sample.
INT16_SCALE = 32768


class AudioError(Exception):
    """A file that cannot be decoded into a clip; ``reason`` says why, in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sample_rate`` Hz: [samples].

    Channels are averaged; other sample rates are resampled with soxr (high quality).
    """
    if not path.is_file():
        raise AudioError(path, "missing: no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty: the file has 0 bytes")
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError:  # its message says "does not exist" for any bad file
        raise AudioError(path, "unreadable: libsndfile cannot decode it as audio") from None
    except (RuntimeError, ValueError) as error:
        raise AudioError(path, f"unreadable: {error}") from None
    if samples.size == 0:
        raise AudioError(path, "no audio: the file decodes to 0 samples")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def fit_length(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """``samples`` cropped, or zero-padded at the end, to exactly ``n_samples``."""
    if len(samples) >= n_samples:
        return samples[:n_samples]
    return np.concatenate([samples, np.zeros(n_samples - len(samples), samples.dtype)])


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 on the int16 scale (x * 32768, rounded, clipped)."""
    scaled = np.rint(samples * INT16_SCALE)
    return np.clip(scaled, -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


def decode_clip(path: Path, sample_rate: int, n_samples: int) -> np.ndarray:
    """A store clip: int16 [n_samples] at ``sample_rate``, mono, cropped or zero-padded."""
    return to_int16(fit_length(decode(path, sample_rate), n_samples))
