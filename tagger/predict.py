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
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagger.aggregation import clip_probabilities
from tagger.errors import ConfigError
from tagger.figures import plot_taggram
from tagger.module import TaggingModule, load_trained
from tagger.prepare.audio import read_audio
from tagger.run_files import OutputError, write_text

#: Files a folder argument contributes (case-insensitive suffixes).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
#: Windows per forward pass: bounds memory on long files.
WINDOWS_PER_BATCH = 32


@dataclass
class Taggram:
    """One file's per-window tag probabilities: ``starts_s`` [n], each window's start in
    seconds, ``hop_s`` seconds apart, and ``probabilities`` [n, K], the sigmoid of each
    window's logits."""

    starts_s: np.ndarray
    hop_s: float
    probabilities: np.ndarray


@dataclass
class Prediction:
    """One file's tag probabilities: ``probabilities`` [K], in the tagger's tag order;
    ``truncated``: why the file decoded shorter than its header says, or None;
    ``taggram``: its windows' probabilities, when asked for."""

    path: Path
    windows: int
    probabilities: np.ndarray
    truncated: str | None = None
    taggram: Taggram | None = None

    def top(self, tag_names: list[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable tags and their probabilities, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(tag_names[i], float(self.probabilities[i])) for i in order]


def audio_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to tag and what was left out: files as given; each folder replaced by its
    audio files (``AUDIO_SUFFIXES``, searched recursively, linked folders followed once,
    sorted), and what the folder holds besides, (path, why), to be named.

    A path that does not exist is kept, so that tagging it reports it as missing. A folder
    with no audio file raises ``ConfigError`` naming it: no input is dropped unsaid.
    """
    found: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        files, others = _folder_audio(path)
        if not files:
            raise ConfigError(
                f"{path} is a folder with no {', '.join(AUDIO_SUFFIXES)} file (searched "
                "recursively); give audio files or folders that hold some"
            )
        found += files
        left_out += others
    return found, left_out


def _folder_audio(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The audio files under ``folder``, sorted, and (path, why) for what else is there: other
    files, folders that cannot be read, links back to a folder already searched."""
    files: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def unreadable(error: OSError) -> None:
        left_out.append((Path(error.filename or folder), f"unreadable folder ({error.strerror})"))

    for root, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link to a folder searched already (or a loop)
            left_out.append((Path(root), "a link to a folder searched already"))
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in names:
            path = Path(root) / name
            if path.suffix.lower() in AUDIO_SUFFIXES:
                files.append(path)
            else:
                why = f"not {', '.join(AUDIO_SUFFIXES)}" if path.exists() else "a broken link"
                left_out.append((path, why))
    return sorted(files), sorted(left_out)


def windows(samples: np.ndarray, window: int, hop: int | None = None) -> torch.Tensor:
    """Mono samples [S] -> windows [n, 1, window] starting every ``hop`` samples (default:
    ``window``, consecutive ones), n = max(1, 1 + (S - window) // hop); a file shorter than
    a window is zero-padded to one, a remainder shorter than a window is dropped."""
    if len(samples) < window:
        samples = np.pad(samples, (0, window - len(samples)))
    return torch.from_numpy(samples.copy()).unfold(0, window, hop or window)[:, None, :]


def taggram_names(files: Iterable[Path]) -> dict[Path, str]:
    """Each file's taggram name (``write_taggram``'s ``name``): its file name, e.g.
    ``song.mp3``; files of the same name in different folders get as many of their last
    folders as tell them apart, e.g. ``rock/song.mp3`` and ``jazz/song.mp3``. The same file
    given twice gets one name."""
    by_name: dict[str, set[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, set()).add(path.resolve())
    names: dict[Path, str] = {}
    for path in files:
        same = by_name[path.name]
        depth = 1
        while len({_last(p, depth) for p in same}) < len(same):
            depth += 1
        names[path] = _last(path.resolve(), depth)
    return names


def _last(path: Path, depth: int) -> str:
    """The last ``depth`` parts of an absolute path, joined by ``/`` (the root left out)."""
    return "/".join(path.parts[1:][-depth:])


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
