"""Embeddings: each input's vector from the layer before a checkpoint's output layer.

A window's embedding is what the network hands its output layer, the ``nn.Linear`` that
maps it to one logit per tag: every network of the zoo ends with it as
``net.classifier[-1]`` (``output_layer``), and a forward pre-hook on that layer catches
its input while the model scores the window as ``tagger predict`` would. So one mechanism
serves every network, and the vectors are those the trained tag scores are computed
from: the 100 units of the hidden dense layer (after BatchNorm and ReLU) for ``baseline``,
``wide``, ``spectrogram`` and ``hybrid``; the flattened output of the last 1-wide conv
(512 per frame left, after the dropout that is off in eval mode) for ``samplecnn``; the
1,024 units of the hidden dense layer for ``rese2``.

The windows are ``tagger predict``'s (``tagger.predict.windows``): an audio file is
decoded to mono at the model's rate and cut into consecutive windows of the model's
length (or windows ``hop`` samples apart); a clip of a store is taken whole, at its
decoded length, as the int16 samples the store holds. An input's vector is the mean of
its windows' vectors; ``write_embeddings`` writes either the means or every window's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tagger.data.store import ClipStore
from tagger.errors import ConfigError
from tagger.models.parts import output_layer
from tagger.predict import WINDOWS_PER_BATCH, Tagger, windows
from tagger.prepare.audio import INT16_SCALE, AudioError, read_audio
from tagger.run_files import replacing


@dataclass
class Embedding:
    """One input's window vectors: ``vectors`` float32 [n, D], window ``w`` starting
    ``starts_s[w]`` seconds into the input. ``name``: the file as given, or the store clip's
    id; a store clip also has its source ``path`` and true ``tags``. ``truncated``: why a
    file decoded shorter than its header says, or None."""

    name: str
    starts_s: np.ndarray
    vectors: np.ndarray
    truncated: str | None = None
    path: str | None = None
    tags: list[str] = field(default_factory=list)

    @property
    def mean(self) -> np.ndarray:
        """The input's vector: the mean of its windows' [D]."""
        return self.vectors.mean(axis=0)


class Embedder:
    """A trained checkpoint ready to embed files and store clips: a ``Tagger`` whose output
    layer's input is caught on each forward pass.

    Args:
        tagger: the checkpoint, loaded (``Tagger.from_checkpoint``).
    """

    def __init__(self, tagger: Tagger) -> None:
        self.tagger = tagger
        self.sample_rate, self.window = tagger.sample_rate, tagger.window
        self._caught: list[Tensor] = []
        layer = output_layer(tagger.model.net, "tagger embed (it reads the layer's input)")
        layer.register_forward_pre_hook(self._catch)

    @classmethod
    def from_checkpoint(
        cls, path: Path, device: str = "cpu", trusted_modules: Sequence[str] = ()
    ) -> Embedder:
        """Load a checkpoint of ``train.py`` through ``load_trained``'s gates (as ``tagger
        predict`` does); raises ``ConfigError`` naming the file."""
        return cls(Tagger.from_checkpoint(path, device, trusted_modules))

    def _catch(self, layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self._caught.append(inputs[0].detach().flatten(1))

    @torch.inference_mode()
    def window_vectors(self, samples: np.ndarray, hop: int | None = None) -> np.ndarray:
        """Mono float samples in [-1, 1] -> the vectors of ``windows(samples, window, hop)``:
        float32 [n, D], a batch of windows per forward pass."""
        model, scale = self.tagger.model, self.tagger.model.hparams.input_scale
        vectors = []
        for batch in windows(samples, self.window, hop).split(WINDOWS_PER_BATCH):
            self._caught.clear()
            model((batch * scale)[None].to(self.tagger.device))
            (caught,) = self._caught
            vectors.append(caught.float().cpu())
        self._caught.clear()
        return torch.cat(vectors).numpy()

    def _embedding(self, name: str, samples: np.ndarray, hop: int | None, **about: object
                   ) -> Embedding:  # fmt: skip
        vectors = self.window_vectors(samples, hop)
        if not np.isfinite(vectors).all():
            raise AudioError(
                Path(name), "the model gives NaN or infinite values for it (a diverged checkpoint?)"
            )
        starts_s = np.arange(len(vectors)) * (hop or self.window) / self.sample_rate
        return Embedding(name, starts_s, vectors, **about)  # type: ignore[arg-type]

    def embed_file(self, path: Path, hop: int | None = None) -> Embedding:
        """One audio file's window vectors; raises ``AudioError`` for a file that cannot be
        decoded (or that the model gives non-finite values for)."""
        samples, truncated = read_audio(path, self.sample_rate)
        return self._embedding(str(path), samples, hop, truncated=truncated)

    def embed_clip(self, store: ClipStore, row: int, hop: int | None = None) -> Embedding:
        """Row ``row`` of a store, whole at its decoded length: its window vectors, named by
        its clip id, with its source path and true tags."""
        samples = store.audio[row].astype(np.float32) / INT16_SCALE
        tags = [name for name, y in zip(store.tag_names, store.labels[row], strict=True) if y]
        return self._embedding(
            store.clip_ids[row], samples, hop, path=store.source_paths[row], tags=tags
        )


def store_rows(path: Path, split: str, sample_rate: int) -> tuple[ClipStore, list[int]]:
    """The store at ``path`` and the rows of its split ``split``; ``ConfigError`` when it
    is no store, holds audio at another rate than the model's ``sample_rate``, or has no
    clip in that split (naming the splits it has)."""
    store = ClipStore(path)
    if store.sample_rate != sample_rate:
        raise ConfigError(
            f"--store {path} holds {store.sample_rate} Hz audio, but the checkpoint's model "
            f"takes {sample_rate} Hz; embed a store prepared at {sample_rate} Hz (tagger "
            f"prepare ... --sample-rate {sample_rate}), or the audio files themselves"
        )
    rows = np.flatnonzero(store.splits == split).tolist()
    if not rows:
        has = ", ".join(sorted(set(store.splits.tolist()))) or "none"
        raise ConfigError(f"--split {split}: the store {path} has no clip in it (its splits: "
                          f"{has})")  # fmt: skip
    return store, rows


def output_paths(out: Path) -> tuple[Path, Path]:
    """``--out FILE``'s two files: ``FILE.npy`` and ``FILE.csv`` (a ``.npy`` or ``.csv``
    ending of ``FILE`` is dropped first)."""
    if out.suffix.lower() in (".npy", ".csv"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".npy"), out.with_name(out.name + ".csv")


def write_embeddings(
    out: Path, embeddings: Sequence[Embedding], per_window: bool = False
) -> tuple[Path, Path, tuple[int, ...]]:
    """Write ``FILE.npy`` (float32 [rows, D]: an input's mean vector per row, or with
    ``per_window`` every window's) and its index ``FILE.csv`` (row i of the array is row i
    of the CSV: ``input``, then ``path`` and ``tags`` for store clips, then ``start_s`` per
    window), both renamed into place together (``replacing``). Returns both paths and the
    array's shape; raises ``OutputError`` naming a file that cannot be written."""
    if not embeddings:
        raise ValueError("no embeddings to write")
    npy, index = output_paths(out)
    store = any(e.path is not None for e in embeddings)
    header = ["input", *(["path", "tags"] if store else []), *(["start_s"] if per_window else [])]
    rows, vectors = [], []
    for embedding in embeddings:
        about = [embedding.name, *([embedding.path, ";".join(embedding.tags)] if store else [])]
        if per_window:
            rows += [[*about, f"{start:.6f}"] for start in embedding.starts_s]
            vectors.append(embedding.vectors)
        else:
            rows.append(about)
            vectors.append(embedding.mean[None])
    array = np.concatenate(vectors).astype(np.float32)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with replacing(npy, index) as (npy_tmp, index_tmp):
        with npy_tmp.open("wb") as f:  # a file object: np.save would add .npy to the name
            np.save(f, array)
        index_tmp.write_text(text.getvalue(), encoding="utf-8")
    return npy, index, array.shape
