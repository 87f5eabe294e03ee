"""Small datasets in exactly the formats of docs/mtat.md, for the data tests.

write_raw_mtat     the raw release: mp3s in part folders + annotations_final.csv
write_coursework   the coursework's copy, two-pickle layout: labels pickles + one .npy per clip
write_coursework_three   the same copy in the three-pickle layout (train / val / test)
write_folder       a folder of wav/flac/ogg/mp3 files of mixed rates, lengths, channels
mp3_with_slack     an mp3 whose header says a little more than it decodes to, as MTAT's do
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from tagger.data.tagsets import MERGED50, MTAT_COLUMNS

#: The three broken files every real MTAT copy has (docs/mtat.md, "The raw release").
EMPTY_MP3 = "6/norine_braun-now_and_zen-08-gently-117-146.mp3"
CORRUPT_MP3 = (
    "8/jacob_heringman-josquin_des_prez_lute_settings-19-gintzler__pater_noster-204-233.mp3"
)
#: Listed in the fixture's CSV but not on disk.
MISSING_MP3 = "9/american_baroque-dances_and_suites_of_rameau_and_couperin-25-le_petit_rien_xiveme_ordre_couperin-88-117.mp3"  # noqa: E501


def tones(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """A few sine tones with a slow swell: float32 [n_samples] in [-0.6, 0.6]."""
    t = np.arange(n_samples) / sample_rate
    freqs = rng.uniform(150, 0.3 * sample_rate, size=3)
    signal = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs)
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
    return (0.2 * signal * swell).astype(np.float32)


@dataclass
class RawMtat:
    """A written raw-release fixture: ``paths[i]`` has raw tags ``raw[i]`` [188]."""

    root: Path
    clip_ids: list[str]
    paths: list[str]
    raw: np.ndarray
    bad: dict[str, str]  # mp3 path -> what is wrong with it


def write_raw_mtat(
    root: Path,
    parts: str = "05bcdf",
    clips_per_part: int = 2,
    seconds: float = 1.5,
    seed: int = 0,
) -> RawMtat:
    """mp3 clips (16 kHz mono, ``seconds`` long) in ``parts``, plus the empty, corrupt and
    missing files, listed in a quoted, tab-separated ``annotations_final.csv``.

    Tags are random (about 4% of the 188 columns, synonyms included); the first clip of
    the first part has no tag at all.
    """
    rng = np.random.default_rng(seed)
    paths = [
        f"{part}/artist_{part}-album-{k:02d}-song-{30 * k}-{30 * k + 29}.mp3"
        for part in parts
        for k in range(clips_per_part)
    ]
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        samples = tones(rng, int(seconds * 16000), 16000)
        soundfile.write(root / path, samples, 16000, format="MP3")
    bad = {EMPTY_MP3: "empty", CORRUPT_MP3: "unreadable", MISSING_MP3: "missing"}
    for path in bad:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / EMPTY_MP3).write_bytes(b"")
    (root / CORRUPT_MP3).write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths += list(bad)
    raw = (rng.random((len(paths), len(MTAT_COLUMNS))) < 0.04).astype(np.uint8)
    raw[0] = 0
    clip_ids = [str(2 + 3 * i) for i in range(len(paths))]
    with open(root / "annotations_final.csv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["clip_id", *MTAT_COLUMNS, "mp3_path"])
        for clip_id, row, path in zip(clip_ids, raw, paths, strict=True):
            writer.writerow([clip_id, *map(str, row.tolist()), path])
    return RawMtat(root, clip_ids, paths, raw, bad)


@dataclass
class Coursework:
    """A written coursework fixture: the labels DataFrames as pickled (``test`` in the
    three-pickle layout only)."""

    root: Path
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame | None = None


def _clip_frame(
    root: Path, folder: str, parts: str, per_part: int, start: int, rng: np.random.Generator
) -> pd.DataFrame:
    rows = []
    for part in parts:
        for k in range(per_part):
            file_path = f"{folder}/{part}/artist_{part}-album-{k:02d}-song-{start + k}.npy"
            (root / "samples" / file_path).parent.mkdir(parents=True, exist_ok=True)
            audio = np.round(tones(rng, 349_500, 12000) * 32767 * rng.uniform(0.2, 1.0))
            np.save(root / "samples" / file_path, audio.astype(np.float32))
            label = (rng.random(len(MERGED50)) < 0.15).astype(np.float64)
            label[rng.integers(len(MERGED50))] = 1.0  # every row has at least one tag
            rows.append({"file_path": file_path, "label": label, "part": part})
    return pd.DataFrame(rows, index=range(start, start + len(rows)))


def _write_pickles(root: Path, protocol: int, **frames: pd.DataFrame) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_pickle(root / "annotations" / f"{name}_labels.pkl", protocol=protocol)


def write_coursework(
    root: Path,
    train_parts: str = "01c",
    val_parts: str = "df",
    per_part: int = 2,
    seed: int = 0,
    protocol: int = 4,
) -> Coursework:
    """The two-pickle layout: ``annotations/train_labels.pkl`` (parts 0-c; here
    ``train_parts``) and ``annotations/val_labels.pkl`` (parts d-f, the test split; here
    ``val_parts``), the val index continuing after the train one, and
    ``samples/{train,val}/<part>/<clip>.npy`` (float32 [349500])."""
    rng = np.random.default_rng(seed)
    train = _clip_frame(root, "train", train_parts, per_part, 0, rng)
    val = _clip_frame(root, "val", val_parts, per_part, len(train), rng)
    _write_pickles(root, protocol, train=train, val=val)
    return Coursework(root, train, val)


def write_coursework_three(
    root: Path,
    train_parts: str = "0ab",
    test_parts: str = "df",
    per_part: int = 2,
    seed: int = 0,
    protocol: int = 4,
) -> Coursework:
    """The three-pickle layout of the same copy: ``train_labels.pkl`` (parts 0-b; here
    ``train_parts``), ``val_labels.pkl`` (part c, its files under ``samples/train/c/``) and
    ``test_labels.pkl`` (parts d-f; here ``test_parts``, files under ``samples/val/``)."""
    rng = np.random.default_rng(seed)
    train = _clip_frame(root, "train", train_parts, per_part, 0, rng)
    val = _clip_frame(root, "train", "c", per_part, len(train), rng)
    test = _clip_frame(root, "val", test_parts, per_part, len(train) + len(val), rng)
    _write_pickles(root, protocol, train=train, val=val, test=test)
    return Coursework(root, train, val, test)


#: (file, sample rate, seconds, channels, tags, split) of the folder fixture.
FOLDER_FILES = [
    ("a/one.wav", 8000, 1.5, 1, "bass;beat", "train"),
    ("a/two.flac", 22050, 0.6, 2, "treble", "train"),
    ("b/three.mp3", 16000, 2.0, 1, "bass", "train"),
    ("b/four.ogg", 44100, 1.0, 2, "treble;beat", "train"),
    ("c/five.wav", 11025, 1.2, 2, "beat", "train"),
    ("c/six.flac", 8000, 0.9, 1, "bass;treble", "val"),
    ("seven.mp3", 24000, 1.1, 2, "beat", "val"),
    ("eight.wav", 16000, 1.3, 1, "treble", "test"),
    ("nine.ogg", 22050, 1.0, 1, "bass", "test"),
]


def write_folder(root: Path, with_split: bool = True, seed: int = 0) -> Path:
    """The files of ``FOLDER_FILES`` under ``root`` and ``root/labels.csv``; returns the CSV."""
    rng = np.random.default_rng(seed)
    for path, rate, seconds, channels, _, _ in FOLDER_FILES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        samples = np.stack([tones(rng, int(rate * seconds), rate) for _ in range(channels)], 1)
        soundfile.write(root / path, samples, rate)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "tags", "split"] if with_split else ["path", "tags"])
        for path, _, _, _, tags, split in FOLDER_FILES:
            writer.writerow([path, tags, split] if with_split else [path, tags])
    return labels


def mp3_with_slack(path: Path, seconds: float, slack_seconds: float, seed: int = 0) -> Path:
    """A whole constant-bitrate mp3 at 16 kHz with no frame-count header, followed by
    ``slack_seconds`` worth of stray bytes: its header's duration, estimated from the file's
    size, is ``slack_seconds`` longer than it decodes to, as with MTAT's clips (29.27 s by
    the header, 29.12 s decoded). Keep the stray bytes under 1 KiB (mpg123 resyncs that far).
    """
    samples = tones(np.random.default_rng(seed), round(seconds * 16000), 16000)
    soundfile.write(path, samples, 16000, format="MP3", bitrate_mode="CONSTANT",
                    compression_level=0.9)  # fmt: skip
    with soundfile.SoundFile(path) as sound:
        byte_rate = path.stat().st_size / (sound.frames / 16000)
    with open(path, "ab") as f:
        f.write(bytes(round(byte_rate * slack_seconds)))
    return path
