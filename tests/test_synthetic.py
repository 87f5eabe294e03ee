"""The built-in synthetic data: deterministic, MTAT-shaped, and tags that mean what they say."""

from __future__ import annotations

import numpy as np
import pytest

from tagger.data.synthetic import SYNTHETIC_TAGS, SyntheticDataModule, synthesize_split

SR = 12000
N = 3 * 4096


@pytest.fixture(scope="module")
def clips() -> tuple[np.ndarray, np.ndarray]:
    return synthesize_split("train", 300, N, SR, seed=7)


def column(name: str) -> int:
    return SYNTHETIC_TAGS.index(name)


def band_energy_fraction(audio: np.ndarray, low: float, high: float) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64), axis=1)) ** 2
    freqs = np.fft.rfftfreq(audio.shape[1], 1 / SR)
    return spectrum[:, (freqs >= low) & (freqs < high)].sum(1) / spectrum.sum(1)


def test_deterministic_and_independent_of_split_size() -> None:
    a_audio, a_labels = synthesize_split("val", 5, N, SR, seed=3)
    b_audio, b_labels = synthesize_split("val", 9, N, SR, seed=3)
    np.testing.assert_array_equal(a_audio, b_audio[:5])
    np.testing.assert_array_equal(a_labels, b_labels[:5])
    c_audio, _ = synthesize_split("val", 5, N, SR, seed=4)
    assert not np.array_equal(a_audio, c_audio)
    d_audio, _ = synthesize_split("test", 5, N, SR, seed=3)
    assert not np.array_equal(a_audio, d_audio)


def test_int16_scale_and_at_least_one_sound_source(clips) -> None:
    audio, labels = clips
    assert audio.dtype == np.int16 and audio.shape == (300, N)
    sources = [column(t) for t in ("bass", "treble", "chord", "sweep", "noise", "beat")]
    assert labels[:, sources].sum(1).min() >= 1
    assert np.abs(audio.astype(np.int32)).max() > 20000  # loud clips use the int16 range


def test_loudness_tags_follow_the_level(clips) -> None:
    audio, labels = clips
    peak = np.abs(audio.astype(np.float64)).max(1) / 32767
    assert peak[labels[:, column("loud")] == 1].min() > 0.65
    assert peak[labels[:, column("quiet")] == 1].max() < 0.07


def test_bass_and_treble_tags_follow_the_spectrum(clips) -> None:
    audio, labels = clips
    low = band_energy_fraction(audio, 50, 400)
    high = band_energy_fraction(audio, 1700, 4500)
    for name, energy in (("bass", low), ("treble", high)):
        has = labels[:, column(name)] == 1
        assert np.median(energy[has]) > 2 * np.median(energy[~has]), name


def test_tempo_tags_only_with_a_beat(clips) -> None:
    _, labels = clips
    tempo = labels[:, column("fast")] + labels[:, column("slow")]
    assert tempo.max() == 1
    assert np.all(labels[tempo == 1, column("beat")] == 1)


def test_datamodule_batches_are_mtat_shaped() -> None:
    dm = SyntheticDataModule(
        train_clips=12, val_clips=4, test_clips=0, n_subclips=3, subclip_len=4096,
        sample_rate=SR, batch_size=5,
    )  # fmt: skip
    assert dm.split_sizes() == {"train_clips": 12, "val_clips": 4, "test_clips": 0}
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (5, 3, 1, 4096)
    assert batch["labels"].shape == (5, len(SYNTHETIC_TAGS))
    assert dm.describe()["name"] == "synthetic" and dm.describe()["real_music"] is False
    index = int(batch["index"][0])
    np.testing.assert_array_equal(
        batch["audio"][0].flatten().numpy(), dm.splits["train"].source.audio[index]
    )
