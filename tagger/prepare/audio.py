"""Decoding audio files to mono int16 clips of a fixed length, or whole tracks (soundfile to
decode, soxr to resample).

soundfile's libsndfile reads wav, flac, ogg and mp3 (libsndfile >= 1.1, as in the PyPI
wheels). A file that cannot become a clip (missing, empty, undecodable, or holding NaN or
infinite samples) raises ``AudioError`` with a short reason, which ``tagger prepare``
records in the store's list of skipped files. A file that decodes clearly shorter than its
own header says is *truncated*: ``read_audio`` returns the samples it has with a note saying
so. "Clearly" knows each format's normal slack (``allowed_shortfall``): a whole mp3 decodes
a little shorter than its header's duration, and that is no warning.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile
import soxr

#: int16 full scale: a float sample in [-1, 1) times this is a store sample.
INT16_SCALE = 32768
#: Frames a wav, flac or ogg file may decode short of its header's frame count and still be
#: whole: two codec blocks (these formats' headers count the frames exactly).
TRUNCATION_TOLERANCE = 2 * 1152
#: An mp3 may decode this much short of its header's duration and still be whole: the larger
#: of MP3_SLACK_SECONDS and MP3_SLACK_FRACTION of the header's duration. Without a frame-count
#: (Xing/Info) header, an mp3's duration is estimated from its size and bitrate, counting the
#: encoder's delay and padding (LAME: 1,105 samples at the start, up to a frame of 576 or
#: 1,152 at the end; 0.21 s at 8 kHz) and stray bytes as audio, which every decoder
#: (libsndfile, ffmpeg, librosa) drops. Whole MTAT clips decode so: 29.27 s by the header,
#: 29.12 s decoded (0.15 s, 0.5 %). A cut file (an interrupted download or copy) falls short
#: by far more.
MP3_SLACK_SECONDS = 0.25
MP3_SLACK_FRACTION = 0.01
#: libsndfile's log line for a wav/aiff data chunk the file ends inside of.
_SHORT_CHUNK = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


class AudioError(Exception):
    """A file that cannot be decoded into a clip; ``reason`` says why, in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def allowed_shortfall(header_frames: int, rate: int, mp3: bool) -> int:
    """Frames a whole file of ``header_frames`` frames (by its header) at ``rate`` Hz may
    decode short of that: ``TRUNCATION_TOLERANCE``, or for an mp3 the larger of
    ``MP3_SLACK_SECONDS`` and ``MP3_SLACK_FRACTION`` of its duration."""
    if not mp3:
        return TRUNCATION_TOLERANCE
    return max(round(MP3_SLACK_SECONDS * rate), round(MP3_SLACK_FRACTION * header_frames))


def _truncation(header_frames: int, frames: int, rate: int, log: str, mp3: bool) -> str | None:
    """Why a decode of ``frames`` frames is clearly shorter than its file's header says (more
    than ``allowed_shortfall``), else None."""
    if header_frames - frames > allowed_shortfall(header_frames, rate, mp3):
        decoded, header = frames / rate, header_frames / rate
        return f"truncated: decodes to {decoded:.2f} s of the {header:.2f} s its header gives"
    short = _SHORT_CHUNK.search(log)
    if short and int(short[2]) < int(short[1]):
        return f"truncated: the file holds {short[2]} of the {short[1]} data bytes its header gives"
    return None


def read_audio(path: Path, sample_rate: int) -> tuple[np.ndarray, str | None]:
    """Mono float32 samples in [-1, 1] at ``sample_rate`` Hz: [samples], and a note when the
    file decodes clearly shorter than its own header says (``"truncated: ..."``; see
    ``allowed_shortfall``), else None.

    Channels are averaged; other sample rates are resampled with soxr (high quality).
    Raises ``AudioError`` for a missing, empty or undecodable file and for NaN or infinite
    samples.
    """
    if not path.is_file():
        raise AudioError(path, "missing: no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty: the file has 0 bytes")
    try:
        sound = soundfile.SoundFile(path)
    except soundfile.LibsndfileError:  # its message says "does not exist" for any bad file
        raise AudioError(path, "unreadable: libsndfile cannot decode it as audio") from None
    except (RuntimeError, ValueError) as error:
        raise AudioError(path, f"unreadable: {error}") from None
    with sound:
        file_rate, header_frames, log = sound.samplerate, sound.frames, sound.extra_info
        mp3 = sound.format == "MP3"
        try:
            samples = sound.read(dtype="float32", always_2d=True)
        except RuntimeError as error:  # libsndfile's, e.g. "flac decoder lost sync."
            reason = str(error).removeprefix("Error : ").rstrip(".")
            raise AudioError(path, f"unreadable: decoding failed ({reason})") from None
    if samples.size == 0:
        raise AudioError(path, "no audio: the file decodes to 0 samples")
    bad = samples.size - int(np.isfinite(samples).sum())
    if bad:
        raise AudioError(path, f"non-finite: {bad} NaN or infinite sample(s)")
    truncated = _truncation(header_frames, len(samples), file_rate, log, mp3)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32), truncated


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """``read_audio``'s samples alone: mono float32 [samples] in [-1, 1] at ``sample_rate``."""
    return read_audio(path, sample_rate)[0]


def fit_length(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """``samples`` cropped, or zero-padded at the end, to exactly ``n_samples``."""
    if len(samples) >= n_samples:
        return samples[:n_samples]
    return np.concatenate([samples, np.zeros(n_samples - len(samples), samples.dtype)])


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 on the int16 scale (x * 32768, rounded, clipped)."""
    scaled = np.rint(samples * INT16_SCALE)
    return np.clip(scaled, -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


def decode_clip(path: Path, sample_rate: int, n_samples: int) -> tuple[np.ndarray, str | None]:
    """A store clip: int16 [n_samples] at ``sample_rate``, mono, cropped or zero-padded; and
    ``read_audio``'s truncation note."""
    samples, truncated = read_audio(path, sample_rate)
    return to_int16(fit_length(samples, n_samples)), truncated


def middle(samples: np.ndarray, max_samples: int | None) -> np.ndarray:
    """The middle ``max_samples`` of ``samples`` (all of them when shorter, or with None)."""
    if max_samples is None or len(samples) <= max_samples:
        return samples
    start = (len(samples) - max_samples) // 2
    return samples[start : start + max_samples]


def decode_track(
    path: Path, sample_rate: int, max_samples: int | None = None
) -> tuple[np.ndarray, str | None]:
    """A store track (version 2): the whole file as int16 [its samples] at ``sample_rate``,
    mono, or its middle ``max_samples``; and ``read_audio``'s truncation note."""
    samples, truncated = read_audio(path, sample_rate)
    return to_int16(middle(samples, max_samples)), truncated
