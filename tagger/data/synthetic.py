"""The built-in dataset: synthetic clips whose tags describe what is audibly in them.

Not music, and no substitute for MTAT; it exists so that everything runs, and
learns, out of the box with no download. Each clip mixes a few sound sources and
gets the tags that describe them:

    bass      a low tone, 55-180 Hz, with a second harmonic
    treble    a high tone, 1.8-4 kHz
    chord     a major triad, root 250-500 Hz
    sweep     a tone gliding up and down (siren), 400-1200 Hz
    noise     broadband noise
    beat      a steady pulse of drum hits (a low thump and a click)
    fast      the beat is 150-200 BPM          (only with beat)
    slow      the beat is 60-90 BPM            (only with beat)
    tremolo   the tones pulse in loudness at 4-8 Hz (only with a tone)
    loud      peak level 0.7-0.95 of full scale
    quiet     peak level 0.02-0.06 of full scale

Clip i of a split is drawn from its own random stream seeded by (seed, split, i),
so it is the same whatever the split sizes. Samples are int16-scale integers held
as int16, like the coursework's MTAT copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tagger.data.clips import ClipDataset
from tagger.data.datamodule import SPLITS, ClipDataModule
from tagger.data.sources import ArrayClips

SYNTHETIC_TAGS: tuple[str, ...] = (
    "bass", "treble", "chord", "sweep", "noise", "beat",
    "fast", "slow", "tremolo", "loud", "quiet",
)  # fmt: skip
_SOURCES = ("bass", "treble", "chord", "sweep", "noise", "beat")
_TONES = ("bass", "treble", "chord", "sweep")


def _drum_track(rng: np.random.Generator, t: np.ndarray, bpm: float, sr: int) -> np.ndarray:
    """Decaying 60 Hz thumps plus short noise clicks, one per beat."""
    period = 60.0 / bpm
    since_hit = (t - rng.uniform(0, period)) % period  # seconds since the last hit
    thump = np.sin(2 * np.pi * 60 * since_hit) * np.exp(-since_hit / 0.08)
    click = rng.standard_normal(t.size) * np.exp(-since_hit / 0.01)
    return thump + 0.5 * click


def synthesize_clip(
    rng: np.random.Generator, n_samples: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """One clip: int16 samples [n_samples] and 0/1 tags [len(SYNTHETIC_TAGS)] (uint8)."""
    t = np.arange(n_samples) / sample_rate
    nyquist = sample_rate / 2
    tags: set[str] = set()
    while not tags & set(_SOURCES):
        tags = {name for name in _SOURCES if rng.random() < 0.35}

    tones = np.zeros(n_samples)
    if "bass" in tags:
        f0 = rng.uniform(55, 180)
        tones += 0.6 * np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(4 * np.pi * f0 * t)
    if "treble" in tags:
        tones += 0.4 * np.sin(2 * np.pi * rng.uniform(1800, min(4000, 0.8 * nyquist)) * t)
    if "chord" in tags:
        root = rng.uniform(250, 500)
        tones += sum(0.3 * np.sin(2 * np.pi * root * ratio * t) for ratio in (1, 1.25, 1.5))
    if "sweep" in tags:
        rate, centre = rng.uniform(0.7, 2.0), rng.uniform(600, 900)
        phase = 2 * np.pi * np.cumsum(centre + 300 * np.sin(2 * np.pi * rate * t)) / sample_rate
        tones += 0.5 * np.sin(phase)
    if rng.random() < 0.35 and tags & set(_TONES):
        tags.add("tremolo")
        tones *= 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(4, 8) * t)

    audio = tones + 0.01 * rng.standard_normal(n_samples)  # a faint noise floor
    if "noise" in tags:
        audio += 0.3 * rng.standard_normal(n_samples)
    if "beat" in tags:
        tempo = rng.choice(["slow", "medium", "fast"])
        bpm = {"slow": (60, 90), "medium": (100, 130), "fast": (150, 200)}[tempo]
        audio += _drum_track(rng, t, rng.uniform(*bpm), sample_rate)
        if tempo != "medium":
            tags.add(tempo)

    level = rng.choice(["quiet", "medium", "loud"], p=[0.3, 0.4, 0.3])
    peak = rng.uniform(*{"quiet": (0.02, 0.06), "medium": (0.15, 0.4), "loud": (0.7, 0.95)}[level])
    if level != "medium":
        tags.add(level)
    audio *= peak * 32767 / np.abs(audio).max()

    labels = np.array([name in tags for name in SYNTHETIC_TAGS], dtype=np.uint8)
    return audio.round().astype(np.int16), labels


def synthesize_split(
    split: str, n_clips: int, n_samples: int, sample_rate: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_clips`` clips of a split: int16 audio [n_clips, n_samples], uint8 labels [n_clips, K]."""
    audio = np.empty((n_clips, n_samples), np.int16)
    labels = np.empty((n_clips, len(SYNTHETIC_TAGS)), np.uint8)
    for i in range(n_clips):
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        audio[i], labels[i] = synthesize_clip(rng, n_samples, sample_rate)
    return audio, labels


class SyntheticDataModule(ClipDataModule):
    """Synthetic clips generated in memory from a seed (see the module docstring).

    Args:
        train_clips, val_clips, test_clips: clips per split (0 leaves a split out).
        data_seed: seed of the generated clips; independent of the training seed, so
            runs with different seeds train on the same data.
        **loader_args: ``n_subclips``, ``subclip_len``, ``sample_rate``, ``batch_size``,
            ``num_workers``, ``shuffle_seed`` (see ``ClipDataModule``).
    """

    def __init__(
        self,
        train_clips: int = 2000,
        val_clips: int = 400,
        test_clips: int = 400,
        data_seed: int = 1234,
        **loader_args: Any,
    ) -> None:
        super().__init__(**loader_args)
        self.sizes = {"train": train_clips, "val": val_clips, "test": test_clips}
        self.data_seed = data_seed

    @property
    def tag_names(self) -> list[str]:
        return list(SYNTHETIC_TAGS)

    def load_splits(self) -> dict[str, ClipDataset]:
        n_samples = self.n_subclips * self.subclip_len
        splits = {}
        for split, n_clips in self.sizes.items():
            if n_clips == 0:
                continue
            audio, labels = synthesize_split(
                split, n_clips, n_samples, self.sample_rate, self.data_seed
            )
            ids = [f"synthetic/{split}/{i:05d}" for i in range(n_clips)]
            splits[split] = ClipDataset(
                ArrayClips(audio), labels, ids, self.n_subclips, self.subclip_len
            )
        return splits

    def describe(self) -> dict[str, Any]:
        return {
            "name": "synthetic",
            "real_music": False,
            "description": "generated test signals (tones, noise, drum pulses), not music; "
            "see tagger/data/synthetic.py",
            "data_seed": self.data_seed,
            "sample_rate": self.sample_rate,
        }
