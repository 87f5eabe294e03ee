"""Tag audio files with a trained checkpoint: decode, window the whole file, average.

A file is decoded to mono at the model's sample rate, cut into consecutive windows of
the model's window length (the remainder shorter than a window is dropped; a file
shorter than one window is zero-padded to one), and the windows' scores are averaged
the way the model was trained to (``model.aggregation``). A file with NaN or infinite
samples is refused (``AudioError``); one that decodes shorter than its header says is
tagged on what it holds, and its ``Prediction`` says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagger.aggregation import clip_probabilities
from tagger.data.audio import read_audio
from tagger.module import TaggingModule, load_trained

#: Files a folder argument contributes (case-insensitive suffixes).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: Windows per forward pass: bounds memory on long files.
WINDOWS_PER_BATCH = 32


@dataclass
class Prediction:
    """One file's tag probabilities: ``probabilities`` [K], in the tagger's tag order;
    ``truncated``: why the file decoded shorter than its header says, or None."""

    path: Path
    windows: int
    probabilities: np.ndarray
    truncated: str | None = None

    def top(self, tag_names: list[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable tags and their probabilities, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(tag_names[i], float(self.probabilities[i])) for i in order]


def audio_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders replaced by their audio files (recursively, sorted).

    A path that does not exist is kept, so that tagging it reports it as missing.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
        else:
            found.append(path)
    return found


def windows(samples: np.ndarray, window: int) -> torch.Tensor:
    """Mono samples [S] -> consecutive windows [n, 1, window], n = max(1, S // window)."""
    if len(samples) < window:
        samples = np.pad(samples, (0, window - len(samples)))
    n = len(samples) // window
    return torch.from_numpy(samples[: n * window].copy()).view(n, 1, window)


class Tagger:
    """A trained checkpoint ready to tag files.

    Args:
        model: the trained module (eval mode).
        sample_rate: the rate the model was trained at, in Hz.
        window: samples per window (the training ``data.subclip_len``).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, model: TaggingModule, sample_rate: int, window: int, device: str) -> None:
        self.model = model.to(device)
        self.sample_rate = sample_rate
        self.window = window
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "cpu") -> Tagger:
        """Load a checkpoint written by ``train.py``; raises ``ConfigError`` naming the file."""
        model, run_config = load_trained(path)
        data = run_config["data"]
        return cls(model, int(data["sample_rate"]), int(data["subclip_len"]), device)

    @property
    def tag_names(self) -> list[str]:
        return self.model.tag_names

    @torch.inference_mode()
    def tag(self, path: Path) -> Prediction:
        """Tag one file; raises ``tagger.data.audio.AudioError`` if it cannot be decoded."""
        samples, truncated = read_audio(path, self.sample_rate)
        audio = windows(samples, self.window)  # [n, 1, T], [-1, 1]
        audio = audio * self.model.hparams.input_scale  # the int16 scale the model trained on
        logits = torch.cat(
            [
                self.model(batch[None].to(self.device))[0]  # [n_batch, K]
                for batch in audio.split(WINDOWS_PER_BATCH)
            ]
        )
        probs = clip_probabilities(logits[None], self.model.hparams.aggregation)[0]
        return Prediction(path, len(audio), probs.cpu().numpy(), truncated)
