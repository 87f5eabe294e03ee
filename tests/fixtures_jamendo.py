"""A small MTG-Jamendo in the data set's own layout (docs/data.md, "MTG-Jamendo").

write_jamendo   mp3 tracks of different lengths (44.1 kHz stereo) in numbered folders,
                one listed track missing, and split files of two subsets and two splits:
                AUDIO/<NN>/<id>.mp3 and SPLITS/split-<i>/autotagging_<subset>-<split>.tsv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from tests.fixtures_mtat import tones

#: The fixture's tags, as the data set names them (category---tag).
TAGS = (
    "genre---rock",
    "genre---electronic",
    "genre---pop",
    "instrument---piano",
    "instrument---guitar",
    "mood/theme---relaxing",
    "mood/theme---happy",
)
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
#: Split file suffix per store split.
FILE_SPLITS = {"train": "train", "val": "validation", "test": "test"}
RATE = 44_100


@dataclass(frozen=True)
class JamendoTrack:
    """One row of a split file."""

    track_id: str
    path: str
    seconds: float
    tags: tuple[str, ...]

    def row(self, artist: int, album: int) -> str:
        fields = [self.track_id, f"artist_{artist:06d}", f"album_{album:06d}", self.path,
                  f"{self.seconds:.1f}", *self.tags]  # fmt: skip
        return "\t".join(fields) + "\n"


@dataclass
class Jamendo:
    """A written fixture: ``audio`` holds the mp3 folders, ``splits`` the ``split-<i>``
    folders; ``tracks[i][split]`` are the rows of split ``i``'s top50tags files (store split
    names); ``missing`` is the PATH of the listed track with no mp3."""

    audio: Path
    splits: Path
    tracks: dict[int, dict[str, list[JamendoTrack]]]
    missing: str


def _tracks(rng: np.random.Generator, n: int) -> list[JamendoTrack]:
    """``n`` tracks with 1-4 tags each; every category has a tag in every track group of
    three, so that small splits still score each category."""
    tracks = []
    for k in range(n):
        number = 200 + 37 * k  # folders 00-99 are the track number's last two digits
        chosen = {TAGS[k % 3], TAGS[3 + k % 2], TAGS[5 + (k // 2) % 2]}
        chosen |= {TAGS[int(i)] for i in rng.choice(len(TAGS), rng.integers(0, 2), replace=False)}
        tags = tuple(tag for tag in rng.permutation(sorted(chosen)) if rng.random() < 0.8)
        tags = tags or (TAGS[k % 3],)
        seconds = round(float(rng.uniform(1.0, 3.0)), 1)
        tracks.append(JamendoTrack(f"track_{number:07d}", f"{number % 100:02d}/{number}.mp3",
                                   seconds, tags))  # fmt: skip
    return tracks


def write_jamendo(root: Path, n_tracks: int = 15, seed: int = 0) -> Jamendo:
    """``n_tracks`` mp3 tracks under ``root/audio`` (the first training track of split 0
    listed but not written) and ``root/splits/split-{0,1}`` with the files of the
    ``top50tags`` and ``genre`` subsets; split 1 swaps split 0's train and test tracks."""
    rng = np.random.default_rng(seed)
    audio, splits = root / "audio", root / "splits"
    tracks = _tracks(rng, n_tracks)
    n_val = n_test = n_tracks // 5
    n_train = n_tracks - n_val - n_test
    split0 = {
        "train": tracks[:n_train],
        "val": tracks[n_train : n_train + n_val],
        "test": tracks[n_train + n_val :],
    }
    split1 = {"train": split0["test"] + split0["train"][n_test:], "val": split0["val"],
              "test": split0["train"][:n_test]}  # fmt: skip
    missing = split0["train"][0].path
    for track in tracks:
        if track.path == missing:
            continue
        (audio / track.path).parent.mkdir(parents=True, exist_ok=True)
        n = round(track.seconds * RATE)
        stereo = np.stack([tones(rng, n, RATE), tones(rng, n, RATE)], axis=1)
        soundfile.write(audio / track.path, stereo, RATE, format="MP3")
    for index, layout in ((0, split0), (1, split1)):
        folder = splits / f"split-{index}"
        folder.mkdir(parents=True)
        for split, rows in layout.items():
            genre = [JamendoTrack(t.track_id, t.path, t.seconds,
                                  tuple(tag for tag in t.tags if tag.startswith("genre---")))
                     for t in rows]  # fmt: skip
            for subset, listed in (("top50tags", rows), ("genre", [t for t in genre if t.tags])):
                text = HEADER + "".join(t.row(k, 3 * k) for k, t in enumerate(listed))
                (folder / f"autotagging_{subset}-{FILE_SPLITS[split]}.tsv").write_text(text)
    return Jamendo(audio, splits, {0: split0, 1: split1}, missing)
