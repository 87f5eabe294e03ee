"""Tag audio files with a trained checkpoint: decode, window the whole file, average.

A file is decoded to mono at the model's sample rate, cut into consecutive windows of
the model's window length (the remainder shorter than a window is dropped; a file
shorter than one window is zero-padded to one), and the windows' scores are averaged
the way the model was trained to (``model.aggregation``). A file with NaN or infinite
samples is refused (``AudioError``); one that decodes shorter than its header says is
tagged on what it holds, and its ``Prediction`` says so.

With a hop, a file also gets a taggram: every window's own tag probabilities (windows
``hop`` samples apart, overlapping when the hop is shorter than a window), written by
``write_taggram`` as a CSV and a picture. The clip-level scores are the same either way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tagger.aggregation import clip_probabilities
from tagger.figures import plot_taggram
from tagger.module import TaggingModule, load_trained
from tagger.predictions import (  # the parts with no model; callers import them here too
    AUDIO_SUFFIXES,
    WINDOWS_PER_BATCH,
    Prediction,
    Taggram,
    audio_files,
    taggram_names,
)
from tagger.prepare.audio import read_audio
from tagger.run_files import OutputError, write_text

__all__ = [
    "AUDIO_SUFFIXES", "WINDOWS_PER_BATCH", "Prediction", "Tagger", "Taggram", "audio_files",
    "taggram_names", "windows", "write_taggram",
]  # fmt: skip


def windows(samples: np.ndarray, window: int, hop: int | None = None) -> torch.Tensor:
    """Mono samples [S] -> windows [n, 1, window] starting every ``hop`` samples (default:
    ``window``, consecutive ones), n = max(1, 1 + (S - window) // hop); a file shorter than
    a window is zero-padded to one, a remainder shorter than a window is dropped."""
    if len(samples) < window:
        samples = np.pad(samples, (0, window - len(samples)))
    return torch.from_numpy(samples.copy()).unfold(0, window, hop or window)[:, None, :]


def write_taggram(
    prediction: Prediction, tag_names: list[str], directory: Path, name: str, top_k: int
) -> tuple[Path, Path]:
    """Write ``directory/<name>.taggram.csv`` (``start_s``, then one column per tag: a row
    per window, probabilities to 6 decimals) and ``<name>.taggram.png`` (``plot_taggram``,
    the file's ``top_k`` tags first), each via a temporary name; return both paths.

    Raises ``OutputError`` naming a file that cannot be written."""
    taggram = prediction.taggram
    if taggram is None:
        raise ValueError(f"{prediction.path} was tagged without a taggram (hop)")
    csv_path, png_path = (directory / f"{name}.taggram.{kind}" for kind in ("csv", "png"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["start_s", *tag_names])
    for start, row in zip(taggram.starts_s, taggram.probabilities, strict=True):
        writer.writerow([f"{start:.6f}", *(f"{p:.6f}" for p in row)])
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError.of(csv_path, error) from None
    write_text(csv_path, out.getvalue())
    try:
        plot_taggram(
            taggram.starts_s, taggram.hop_s, taggram.probabilities, tag_names,
            prediction.probabilities, png_path, top_k, title=str(prediction.path),
        )  # fmt: skip
    except OSError as error:
        raise OutputError.of(png_path, error) from None
    return csv_path, png_path


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
    def from_checkpoint(
        cls, path: Path, device: str = "cpu", trusted_modules: Sequence[str] = ()
    ) -> Tagger:
        """Load a checkpoint written by ``train.py`` (``trusted_modules``: modules of the
        user's own it may name); raises ``ConfigError`` naming the file."""
        model, run_config = load_trained(path, trusted_modules)
        data = run_config["data"]
        return cls(model, int(data["sample_rate"]), int(data["subclip_len"]), device)

    @property
    def tag_names(self) -> list[str]:
        return self.model.tag_names

    @property
    def thresholds(self) -> dict[str, float] | None:
        """Each tag's decision threshold as the checkpoint stores it (``tagger.decisions``),
        or None for a checkpoint that stores none (a run from before they were fitted)."""
        stored = self.model.thresholds
        return None if stored is None else dict(stored["values"])

    @torch.inference_mode()
    def tag(self, path: Path, hop: int | None = None) -> Prediction:
        """Tag one file; with ``hop`` (samples, 1 to the window length) also its taggram,
        from windows ``hop`` samples apart. Raises ``tagger.prepare.audio.AudioError`` if the
        file cannot be decoded."""
        samples, truncated = read_audio(path, self.sample_rate)
        logits = self._window_logits(windows(samples, self.window))  # [n, K]
        probs = clip_probabilities(logits[None], self.model.hparams.aggregation)[0]
        prediction = Prediction(path, len(logits), probs.cpu().numpy(), truncated)
        if hop is not None:
            if hop != self.window:
                logits = self._window_logits(windows(samples, self.window, hop))
            hop_s = hop / self.sample_rate
            prediction.taggram = Taggram(
                np.arange(len(logits)) * hop_s, hop_s, torch.sigmoid(logits).cpu().numpy()
            )
        return prediction

    def _window_logits(self, audio: torch.Tensor) -> torch.Tensor:
        """Windows [n, 1, T] on the [-1, 1] scale -> each window's logits [n, K]; the windows
        are scaled a batch at a time, so overlapping ones (a view) are never all copied."""
        scale = self.model.hparams.input_scale  # the int16 scale the model trained on
        return torch.cat(
            [
                self.model((batch * scale)[None].to(self.device))[0]  # [n_batch, K]
                for batch in audio.split(WINDOWS_PER_BATCH)
            ]
        )
