"""Gate 6, no silent default (data side): tracks keep their real length, windows lie in the
real audio, a track of no samples is refused, and every input a command leaves out is named."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagger.cli import check as check_cli
from tagger.cli.prepare import prepare
from tagger.data.clips import ClipDataset, EveryWindow, RandomWindows
from tagger.data.device import DeviceBatches, to_device
from tagger.data.sampler import EpochShuffleSampler
from tagger.data.store import AUDIO_DTYPE, ClipStore, StoreAudio
from tagger.errors import ConfigError
from tagger.predict import audio_files
from tests.conftest import compose_config

RATE = 8000
#: Tags of the one-second recordings and what makes each audible.
TAGS = ("high", "low", "noise", "pulse")


def recording(rng: np.random.Generator, tags: set[str], n_samples: int) -> np.ndarray:
    """float32 [n_samples] in [-1, 1] that holds what ``tags`` name (``TAGS``)."""
    t = np.arange(n_samples) / RATE
    audio = 0.01 * rng.standard_normal(n_samples)
    if "low" in tags:
        audio += 0.4 * np.sin(2 * np.pi * rng.uniform(120, 300) * t + rng.uniform(0, 6.3))
    if "high" in tags:
        audio += 0.3 * np.sin(2 * np.pi * rng.uniform(1800, 3200) * t + rng.uniform(0, 6.3))
    if "noise" in tags:
        audio += 0.25 * rng.standard_normal(n_samples)
    if "pulse" in tags:
        since = (t - rng.uniform(0, 0.1)) % rng.uniform(0.08, 0.14)
        audio += 0.8 * np.exp(-since / 0.005) * rng.standard_normal(n_samples)
    return (audio / max(1.0, np.abs(audio).max() / 0.95)).astype(np.float32)


def write_recordings(root: Path, counts: dict[str, int], seconds: float = 1.0) -> Path:
    """A folder of labelled recordings of ``seconds`` s at 8 kHz, ``counts`` per split, and
    its labels CSV (path,tags,split)."""
    rng = np.random.default_rng(19)
    root.mkdir(parents=True)
    rows = ["path,tags,split"]
    for split, count in counts.items():
        for i in range(count):
            tags: set[str] = set()
            while not tags:
                tags = {tag for tag in TAGS if rng.random() < 0.4}
            name = f"{split}{i:03d}.wav"
            soundfile.write(root / name, recording(rng, tags, round(seconds * RATE)), RATE)
            rows.append(f"{name},{';'.join(sorted(tags))},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def prepare_folder(root: Path, out: Path, clip_seconds: str, *args: str) -> ClipStore:
    """``tagger prepare folder --clip-seconds CLIP_SECONDS`` at 8 kHz, then the store."""
    prepare([
        "folder", "--root", str(root), "--labels", str(root / "labels.csv"), "--out", str(out),
        "--sample-rate", str(RATE), "--clip-seconds", clip_seconds, "--workers", "1", *args,
    ])  # fmt: skip
    return ClipStore(out)


#: Done-when 2's training: half-second random windows, two spread windows to evaluate.
HALF_SECOND = [
    "data.subclip_len=4000", "data.n_subclips=2", "data.random_windows=true",
    "data.train_subclips=1", "stride=16", "data.batch_size=16", "trainer.max_epochs=12",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
]  # fmt: skip
#: How much lower the test AUC of the --clip-seconds none store may be than the fixed one's.
AUC_MARGIN = 0.03


@pytest.mark.slow
def test_one_second_recordings_tag_as_well_kept_whole_as_at_a_fixed_length(
    tmp_path: Path,
) -> None:
    """Done when 2: ``prepare folder --clip-seconds none`` of one-second recordings, trained
    on half-second windows, tags as well as the same recordings prepared at 1 s."""
    from tagger.train import train

    write_recordings(tmp_path / "audio", {"train": 240, "val": 60, "test": 100})
    stores = {
        "none": prepare_folder(tmp_path / "audio", tmp_path / "whole", "none"),
        "fixed": prepare_folder(tmp_path / "audio", tmp_path / "fixed", "1"),
    }
    assert stores["none"].version == 2 and stores["none"].meta["padded"]["count"] == 0
    assert stores["none"].audio.lengths.tolist() == [RATE] * 400  # real lengths, unpadded
    auc = {}
    for name, store in stores.items():
        overrides = ["data=store", f"data.path={store.path}", *HALF_SECOND]
        summary = train(compose_config("train", tmp_path / f"run_{name}", overrides))
        auc[name] = summary["test"]["auc"]
    print(f"test AUC: --clip-seconds none {auc['none']:.4f}, --clip-seconds 1 {auc['fixed']:.4f}")
    assert auc["fixed"] > 0.75 and auc["none"] > 0.75, auc  # chance is 0.5
    assert auc["none"] >= auc["fixed"] - AUC_MARGIN, auc


def test_clip_seconds_none_keeps_every_track_at_its_real_length(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_recordings(tmp_path / "audio", {"train": 3}, seconds=1.0)
    soundfile.write(tmp_path / "audio" / "train001.wav", np.full(400, 0.5), RATE)  # 0.05 s
    soundfile.write(tmp_path / "audio" / "train002.wav", np.full(2, 0.5), 48000)  # 0 at 8 kHz
    store = prepare_folder(tmp_path / "audio", tmp_path / "store", "none")
    out = capsys.readouterr().out
    assert store.audio.lengths.tolist() == [RATE, 400]  # nothing padded to 5 s
    assert np.diff(store.track_offsets).tolist() == [RATE, 400]
    assert (store.meta["min_samples"], store.meta["padded"]) == (0, {"count": 0, "tracks": []})
    assert store.meta["skipped"] == [
        {
            "path": "train002.wav",
            "clip_id": "train002.wav",
            "reason": "no audio: it decodes to 0 samples at 8000 Hz",
        }
    ]
    assert "skipped train002.wav: no audio: it decodes to 0 samples at 8000 Hz" in out
    assert "zero-padded" not in out


def test_a_padded_store_is_read_at_its_decoded_lengths(tmp_path: Path) -> None:
    """A store padded at prepare (--min-seconds, or the former 5 s default): no window is
    placed in the padding."""
    write_recordings(tmp_path / "audio", {"train": 4}, seconds=0.5)
    store = prepare_folder(tmp_path / "audio", tmp_path / "store", "none", "--min-seconds", "5")
    assert np.diff(store.track_offsets).tolist() == [5 * RATE] * 4
    assert store.audio.lengths.tolist() == [RATE // 2] * 4
    windows = RandomWindows(ClipDataset(store.audio, store.labels, store.clip_ids, 2, 1000), 3, 0)
    assert (windows.epoch_starts(0) <= RATE // 2 - 1000).all()
    meta = json.loads((store.path / "meta.json").read_text())
    meta["padded"]["tracks"][1]["decoded_samples"] = 10**9
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"padded track train001\.wav has decoded_samples"):
        ClipStore(store.path)


def track_source(tmp_path: Path, lengths: list[int]) -> StoreAudio:
    """Tracks of ``lengths`` samples back to back in one file, track i all ``i + 1``."""
    audio = np.concatenate([np.full(n, i + 1, AUDIO_DTYPE) for i, n in enumerate(lengths)])
    (tmp_path / "audio.bin").write_bytes(audio.tobytes())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return StoreAudio(tmp_path / "audio.bin", np.arange(len(lengths)), offsets[:-1],
                      np.asarray(lengths), tracks=True)  # fmt: skip


def assert_windows_in_the_audio(
    audio: np.ndarray, lengths: list[int], window: int, first: int = 0
) -> None:
    """Each clip's windows [W, 1, window] (clips ``first``, ``first + 1``, ...) hold its own
    samples, then zeros only where the track is shorter than one window (padded up to one
    window, no further)."""
    for clip, windows in enumerate(audio, first):
        real = min(lengths[clip], window)
        assert (windows[..., :real] == clip + 1).all(), clip
        assert (windows[..., real:] == 0).all(), clip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(1, 600), min_size=1, max_size=8),
    window=st.integers(1, 300),
    n_windows=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 3),
)
def test_every_window_starts_inside_the_real_audio(
    tmp_path: Path, lengths: list[int], window: int, n_windows: int, seed: int, epoch: int
) -> None:
    source = track_source(tmp_path, lengths)
    clips = ClipDataset(source, np.zeros((len(lengths), 2)), [str(i) for i in range(len(lengths))],
                        n_windows, window)  # fmt: skip
    random = RandomWindows(clips, n_windows, seed)
    starts = random.epoch_starts(epoch)
    room = np.maximum(np.asarray(lengths) - window, 0)[:, None]
    assert (starts >= 0).all() and (starts <= room).all()
    indices = list(range(len(lengths)))
    trained = random.__getitems__([(i, epoch) for i in indices])["audio"].numpy()
    assert_windows_in_the_audio(trained, lengths, window)
    assert_windows_in_the_audio(clips.__getitems__(indices)["audio"].numpy(), lengths, window)
    every = EveryWindow(clips)
    for i in indices:
        assert_windows_in_the_audio(every.__getitems__([i])["audio"].numpy(), lengths, window, i)

    # data.on_device gathers the very same windows on the device
    sampler = EpochShuffleSampler(len(lengths), seed, with_epoch=True)
    sampler.set_epoch(epoch)
    split = to_device(clips, torch.device("cpu"), whole_clips=True)
    for batch in DeviceBatches(split, window, 3, sampler, random_windows=random):
        keys = [(int(i), epoch) for i in batch["index"]]
        assert torch.equal(batch["audio"], random.__getitems__(keys)["audio"])


def write_store_of_empty_tracks(path: Path) -> None:
    """A version 2 store whose tracks hold no samples (as a hand-made one could)."""
    path.mkdir()
    (path / "audio.bin").write_bytes(b"")
    np.save(path / "offsets.npy", np.zeros(4, np.int64))
    np.save(path / "labels.npy", np.eye(3, 2, dtype=np.uint8))
    rows = ["clip_id,path,split", "a,a.wav,train", "b,b.wav,val", "c,c.wav,test"]
    (path / "clips.csv").write_text("\n".join(rows) + "\n")
    meta = {"format_version": 2, "source": "folder", "tag_set": "x", "split_rule": "split column",
            "dropped": {}, "sample_rate": RATE, "clip_samples": None, "clip_seconds": None,
            "dtype": "int16", "clips": 3, "counts": {"train": 1, "val": 1, "test": 1},
            "tag_names": ["x", "y"], "skipped": [], "truncated_files": "keep", "truncated": [],
            "max_samples": None, "min_samples": 0,
            "track_samples": {"min": 0, "max": 0, "mean": 0.0, "total": 0},
            "padded": {"count": 0, "tracks": []}}  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))


def test_a_store_of_tracks_with_no_samples_does_not_pass_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    write_store_of_empty_tracks(tmp_path / "store")
    with pytest.raises(ConfigError, match=r"3 track\(s\) hold no samples \(a, b, c\)"):
        ClipStore(tmp_path / "store")
    monkeypatch.setattr(sys, "argv", ["tagger check", "data=store",
                                      f"data.path={tmp_path / 'store'}"])  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        check_cli.main()
    err = capsys.readouterr().err
    assert stopped.value.code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "hold no samples (a, b, c)" in err, err


@st.composite
def folder_trees(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(relative path, kind) entries of a folder: audio or other files, empty folders."""
    names = st.text("abcxyz", min_size=1, max_size=4)
    suffixes = st.sampled_from([".wav", ".MP3", ".flac", ".txt", ".jpg", ""])
    entries = []
    for _ in range(draw(st.integers(0, 8))):
        depth = draw(st.lists(names, max_size=3))
        kind = draw(st.sampled_from(["file", "folder"]))
        name = draw(names) + (draw(suffixes) if kind == "file" else "")
        entries.append(("/".join([*depth, name]), kind))
    return entries


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=folder_trees(), loop=st.booleans())
def test_a_folder_input_is_expanded_or_refused_never_dropped(
    tmp_path_factory: pytest.TempPathFactory, tree: list[tuple[str, str]], loop: bool
) -> None:
    root = tmp_path_factory.mktemp("inputs") / "music"
    root.mkdir()
    for relative, kind in tree:
        path = root / relative
        if any(p.is_file() for p in [path, *path.parents]) or path.is_dir():
            continue  # a name already taken by the other kind
        if kind == "folder":
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    if loop:
        os.symlink(root, root / "again")  # a link back to the folder: searched once
    given_file = root.parent / "given.txt"
    given_file.write_text("a file given by name is tried as it is")
    every = sorted(p for p in root.rglob("*") if p.is_file())
    audio = [p for p in every if p.suffix.lower() in (".wav", ".mp3", ".flac")]
    if not audio:
        with pytest.raises(ConfigError, match=rf"{root} is a folder with no \.wav"):
            audio_files([given_file, root])
        return
    files, left_out = audio_files([given_file, root])
    assert files == [given_file, *audio]
    named = [path for path, _ in left_out]
    assert sorted(p for p in named if p.is_file()) == [p for p in every if p not in audio]
    assert (root / "again" in named) == loop


def test_check_names_the_files_prepare_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    write_recordings(tmp_path / "audio", {"train": 2, "val": 1})
    soundfile.write(tmp_path / "audio" / "train001.wav", np.full(2, 0.5), 48000)  # 0 at 8 kHz
    store = prepare_folder(tmp_path / "audio", tmp_path / "store", "none")
    capsys.readouterr()
    argv = ["tagger check", "--workers", "1", "data=store", f"data.path={store.path}"]
    monkeypatch.setattr(sys, "argv", [*argv, "data.n_subclips=1", "data.subclip_len=4000"])
    with pytest.raises(SystemExit) as stopped:
        check_cli.main()
    out = capsys.readouterr().out
    assert stopped.value.code == 0, out
    assert "left out train001.wav: skipped when prepared: no audio: it decodes to 0 samples" in out


#: Files a prepare cannot use, each written as bytes: what it holds.
UNUSABLE = {
    "empty": b"",
    "text": b"not audio at all\n" * 8,
}


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=st.lists(st.sampled_from(["good", "short", "none", "empty", "text", "missing"]),
                      min_size=1, max_size=6))  # fmt: skip
def test_prepare_keeps_or_names_every_file(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture, kinds: list[str]
) -> None:
    root = tmp_path_factory.mktemp("prepare") / "audio"
    write_recordings(root, {"train": 1}, seconds=0.5)  # one usable file at least
    rows = (root / "labels.csv").read_text().splitlines()
    rng = np.random.default_rng(len(kinds))
    for i, kind in enumerate(kinds):
        name = f"f{i}.wav"
        if kind == "good":
            soundfile.write(root / name, recording(rng, {"low"}, 3000), RATE)
        elif kind == "short":
            soundfile.write(root / name, np.full(5, 0.3), RATE)
        elif kind == "none":
            soundfile.write(root / name, np.full(2, 0.3), 48000)  # no sample at 8 kHz
        elif kind in UNUSABLE:
            (root / name).write_bytes(UNUSABLE[kind])
        rows.append(f"{name},low,train")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    store = prepare_folder(root, root.parent / "store", "none")
    out = capsys.readouterr().out
    kept = set(store.source_paths)
    for i, kind in enumerate(kinds):
        name = f"f{i}.wav"
        usable = kind in ("good", "short")
        assert (name in kept) == usable, (name, kind)
        assert (f"skipped {name}: " in out) == (not usable), (name, kind, out)
    lengths = dict(zip(store.source_paths, store.audio.lengths.tolist(), strict=True))
    assert all(lengths[f"f{i}.wav"] == {"good": 3000, "short": 5}[kind]
               for i, kind in enumerate(kinds) if kind in ("good", "short"))  # fmt: skip


def test_a_fixed_length_names_the_files_it_pads(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_recordings(tmp_path / "audio", {"train": 3})
    store = prepare_folder(tmp_path / "audio", tmp_path / "long", "2")
    out = capsys.readouterr().out
    assert "zero-padded 3 of 3 file(s) shorter than the clip length, 2 s, to it" in out
    assert [entry["decoded_samples"] for entry in store.meta["padded"]["tracks"]] == [RATE] * 3
    store = prepare_folder(tmp_path / "audio", tmp_path / "exact", "1")
    assert store.meta["padded"] == {"count": 0, "tracks": []}
    assert "zero-padded" not in capsys.readouterr().out
