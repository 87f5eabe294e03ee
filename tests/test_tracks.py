"""Tracks of any length: the version 2 clip store, its windows, and version 1 stores kept."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch

from tagger.check import check_data
from tagger.cli.prepare import prepare
from tagger.data.clips import ClipDataset, EveryWindow, RandomWindows, spread_starts
from tagger.data.sampler import EpochShuffleSampler
from tagger.data.store import ClipStore, partial_dir
from tagger.data.store_data import StoreDataModule
from tagger.errors import ConfigError
from tagger.prepare import build
from tagger.prepare.writer import StoreClip, StorePlan
from tagger.train import train
from tests.conftest import compose_config
from tests.fixtures_mtat import tones
from tests.test_data_coursework import QUICK

RATE = 8000
#: (file, its sample rate, seconds, channels, tags, split): every length differs
TRACKS = [
    ("short.wav", 8000, 0.3, 1, "bass", "train"),
    ("a/one.flac", 16000, 1.7, 2, "bass;beat", "train"),
    ("a/two.wav", 22050, 2.6, 1, "beat", "train"),
    ("three.ogg", 8000, 1.1, 1, "treble", "train"),
    ("four.wav", 11025, 3.4, 2, "bass;treble", "train"),
    ("five.wav", 8000, 0.9, 1, "beat", "val"),
    ("six.flac", 8000, 2.2, 1, "treble;bass", "val"),
    ("seven.wav", 8000, 1.45, 1, "beat;treble", "test"),
    ("eight.wav", 16000, 0.6, 1, "bass", "test"),
]


def write_tracks(root: Path, tracks: list[tuple] = TRACKS) -> Path:
    """``tracks`` written as audio files under ``root`` and their labels CSV; its path."""
    rng = np.random.default_rng(3)
    rows = ["path,tags,split"]
    for path, rate, seconds, channels, tags, split in tracks:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        samples = np.stack([tones(rng, round(seconds * rate), rate) for _ in range(channels)], 1)
        soundfile.write(root / path, samples, rate)
        rows.append(f"{path},{tags},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def prepare_tracks(root: Path, out: Path, *args: str) -> ClipStore:
    """``tagger prepare folder ... --clip-seconds none`` at 8 kHz, then the store."""
    argv = ["folder", "--root", str(root), "--labels", str(root / "labels.csv"), "--out", str(out)]
    prepare([*argv, "--sample-rate", str(RATE), "--clip-seconds", "none", "--workers", "1", *args])
    return ClipStore(out)


def direct_decode(path: Path) -> np.ndarray:
    """``path`` decoded without tagger: mono, resampled to 8 kHz, int16-scale floats."""
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality="HQ")
    return np.rint(mono * 32768)


@pytest.fixture
def track_store(tmp_path: Path) -> tuple[Path, ClipStore]:
    """The ``TRACKS`` folder prepared whole, padding to 0.5 s: (its root, the store)."""
    write_tracks(tmp_path / "audio")
    return tmp_path / "audio", prepare_tracks(tmp_path / "audio", tmp_path / "store",
                                               "--min-seconds", "0.5")  # fmt: skip


def test_prepare_keeps_every_track_at_its_own_length(track_store) -> None:
    root, store = track_store
    assert store.version == 2 and store.clip_samples is None
    assert sorted(p.name for p in store.path.iterdir()) == [
        "audio.bin", "clips.csv", "labels.npy", "meta.json", "offsets.npy",
    ]  # fmt: skip
    assert store.source_paths == [path for path, *_ in TRACKS]
    lengths, audio = [], store.memmap()
    for row, (path, *_) in enumerate(TRACKS):
        direct = direct_decode(root / path)
        stored = audio[store.track_offsets[row] : store.track_offsets[row + 1]]
        lengths.append(len(stored))
        assert len(stored) == max(len(direct), 4000), path  # every length kept; 0.5 s at least
        np.testing.assert_allclose(stored[: len(direct)], direct, atol=1, err_msg=path)
        assert not stored[len(direct) :].any()  # padded with zeros
        read = store.audio[row]  # the reader takes the track at its real length
        assert len(read) == len(direct) == store.audio.lengths[row], path
        np.testing.assert_allclose(read, direct, atol=1, err_msg=path)
    offsets = np.load(store.path / "offsets.npy")
    assert offsets.dtype == np.int64 and offsets.tolist() == [0, *np.cumsum(lengths)]
    assert len(np.memmap(store.path / "audio.bin", "<i2", "r")) == sum(lengths)
    meta = json.loads((store.path / "meta.json").read_text())
    assert (meta["format_version"], meta["clip_samples"], meta["max_samples"]) == (2, None, None)
    assert meta["min_samples"] == 4000
    assert meta["track_samples"] == {
        "min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths),
        "total": sum(lengths),
    }  # fmt: skip
    padded = [{"path": "short.wav", "clip_id": "short.wav", "decoded_samples": 2400}]
    assert meta["padded"] == {"count": 1, "tracks": padded}


def test_max_seconds_keeps_the_middle_of_longer_files(tmp_path: Path) -> None:
    write_tracks(tmp_path / "audio")
    store = prepare_tracks(tmp_path / "audio", tmp_path / "store", "--max-seconds", "2",
                           "--min-seconds", "1")  # fmt: skip
    assert store.meta["max_samples"] == 16000 and store.meta["padded"]["count"] == 3
    for row, (path, *_) in enumerate(TRACKS):
        direct = direct_decode(tmp_path / "audio" / path)
        if len(direct) > 16000:
            first = (len(direct) - 16000) // 2
            np.testing.assert_allclose(store.audio[row], direct[first : first + 16000], atol=1)
        else:
            stored = store.track_offsets[row + 1] - store.track_offsets[row]
            assert (stored, len(store.audio[row])) == (max(len(direct), 8000), len(direct)), path


def test_a_plan_of_tracks_keeps_its_meta(tmp_path: Path) -> None:
    """The ``StorePlan`` other sources build on: clip_samples=None, max_samples, meta."""
    write_tracks(tmp_path / "audio", TRACKS[:3])
    clips = [
        StoreClip(path, tmp_path / "audio" / path, path, split, np.array([1, 0], np.uint8))
        for path, *_, split in TRACKS[:3]
    ]
    meta = {"source": "test", "tag_set": "two", "split_rule": "given", "dropped": {},
            "tag_categories": {"genre": ["x"], "mood": ["y"]}}  # fmt: skip
    with pytest.raises(ValueError, match="max_samples 12000 < min_samples 16000"):
        StorePlan(clips, ["x", "y"], RATE, None, meta=meta, max_samples=12000, min_samples=16000)
    plan = StorePlan(clips, ["x", "y"], RATE, None, meta, max_samples=12000, min_samples=4000)
    store = ClipStore(build.build_store(plan, tmp_path / "store", workers=0))
    assert store.meta["tag_categories"] == {"genre": ["x"], "mood": ["y"]}
    assert np.diff(store.track_offsets).tolist() == [4000, 12000, 12000]  # padded; the middle
    assert store.audio.lengths.tolist() == [2400, 12000, 12000]  # read at the decoded length
    assert store.meta["padded"]["count"] == 1 and store.meta["max_samples"] == 12000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clip-seconds", "2", "--max-seconds", "1"], "whole tracks; add --clip-seconds none"),
        (["--clip-seconds", "none", "--max-seconds", "2", "--min-seconds", "3"],
         "is shorter than --min-seconds 3.0"),
    ],
)  # fmt: skip
def test_bad_track_options_are_named(tmp_path: Path, args: list[str], message: str) -> None:
    write_tracks(tmp_path / "audio", TRACKS[:2])
    root = tmp_path / "audio"
    argv = ["folder", "--root", str(root), "--labels", str(root / "labels.csv")]
    with pytest.raises(ConfigError, match=message):
        prepare([*argv, "--out", str(tmp_path / "store"), *args])
    assert not (tmp_path / "store").exists()


def test_an_interrupted_prepare_of_tracks_resumes_to_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    many = [(f"{i:02d}.wav", 8000, float(rng.uniform(0.2, 1.5)), 1, "bass", "train")
            for i in range(20)]  # fmt: skip
    write_tracks(tmp_path / "audio", many)
    decode, calls = build.decode_or_reason, []

    def failing(*args: object) -> object:
        calls.append(args)
        if len(calls) == 18:  # after the first commit (8 files; 8 more are decoded ahead)
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(build, "decode_or_reason", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_tracks(tmp_path / "audio", tmp_path / "store", "--min-seconds", "1")
    monkeypatch.setattr(build, "decode_or_reason", decode)
    partial = partial_dir(tmp_path / "store")
    assert (partial / "done.jsonl").read_text().count("\n") == 8
    with open(partial / "audio.bin", "ab") as f:  # a chunk written, killed before its commit
        f.write(b"\1\2" * 1000)

    store = prepare_tracks(tmp_path / "audio", tmp_path / "store", "--min-seconds", "1")
    fresh = prepare_tracks(tmp_path / "audio", tmp_path / "fresh", "--min-seconds", "1")
    np.testing.assert_array_equal(store.track_offsets, fresh.track_offsets)
    np.testing.assert_array_equal(store.memmap(), fresh.memmap())
    assert store.meta["padded"] == fresh.meta["padded"] and store.meta["padded"]["count"] > 0


def test_a_damaged_store_of_tracks_is_named(track_store) -> None:
    _, store = track_store
    offsets = np.load(store.path / "offsets.npy")
    np.save(store.path / "offsets.npy", offsets[:-1])
    with pytest.raises(ConfigError, match=r"offsets.npy: expected 10 rising int64 offsets"):
        ClipStore(store.path)
    np.save(store.path / "offsets.npy", offsets + np.arange(len(offsets)))
    with pytest.raises(ConfigError, match=r"audio.bin has \d+ bytes, not \d+, but meta.json and"):
        ClipStore(store.path)


def test_spread_windows_run_from_the_start_to_the_end_of_each_track() -> None:
    starts = spread_starts(np.array([10_000, 4000, 2500, 4001]), 3, 4000)
    assert starts.tolist() == [[0, 3000, 6000], [0, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert spread_starts(np.array([10_000]), 1, 4000).tolist() == [[3000]]  # the middle


def test_windows_of_a_store_of_tracks(track_store) -> None:
    _, store = track_store
    clips = ClipDataset(store.audio, store.labels, store.clip_ids, n_subclips=3, subclip_len=6000)
    lengths = store.audio.lengths
    assert clips.short_tracks() == int((lengths < 6000).sum()) > 0
    for index in range(len(clips)):
        track, audio = store.audio[index], clips[index]["audio"][:, 0].numpy()
        assert audio.shape == (3, 6000)
        if len(track) >= 6000:  # first window at 0, last ending at the track's end
            np.testing.assert_array_equal(audio[0], track[:6000])
            np.testing.assert_array_equal(audio[2], track[-6000:])
        else:  # shorter than a window: zero-filled past its end
            np.testing.assert_array_equal(audio[1, : len(track)], track)
            assert not audio[:, len(track) :].any()

    windows = RandomWindows(clips, n_windows=4, seed=5)
    starts = windows.epoch_starts(2)
    assert starts.shape == (len(clips), 4)
    assert ((starts >= 0) & (starts <= np.maximum(lengths - 6000, 0)[:, None])).all()
    assert (starts[lengths >= 12_000] > 0).any()  # windows anywhere in the track
    np.testing.assert_array_equal(RandomWindows(clips, 4, seed=5).epoch_starts(2), starts)
    assert not np.array_equal(windows.epoch_starts(3), starts)  # new every epoch
    row = int(np.argmax(lengths))
    got = windows[(row, 2)]["audio"][:, 0].numpy()
    for window, start in zip(got, starts[row], strict=True):
        np.testing.assert_array_equal(window, store.audio[row][start : start + 6000])

    every = EveryWindow(clips)
    assert every.counts.tolist() == np.maximum(lengths // 6000, 1).tolist()
    audio = every[row]["audio"][:, 0].numpy()
    assert audio.shape == (lengths[row] // 6000, 6000)
    np.testing.assert_array_equal(audio.ravel(), store.audio[row][: audio.size])
    with pytest.raises(ValueError, match="batch tracks one at a time"):
        every.__getitems__([0, row])


def test_loaders_and_on_device_batches_agree_on_tracks(track_store) -> None:
    _, store = track_store
    args = {"sample_rate": RATE, "n_subclips": 2, "subclip_len": 6000, "batch_size": 2,
            "shuffle_seed": 4, "random_windows": True, "train_subclips": 3}  # fmt: skip
    for eval_windows in ("spread", "all"):
        host = StoreDataModule(str(store.path), eval_windows=eval_windows, **args)
        device = StoreDataModule(str(store.path), eval_windows=eval_windows, on_device=True, **args)
        host.setup(), device.setup()
        for epoch in (0, 1):
            loaders = [module.train_dataloader() for module in (host, device)]
            for loader in loaders:
                loader.sampler.set_epoch(epoch)
            expected, got = (list(loader) for loader in loaders)
            assert [b["audio"].shape[:2] for b in got] == [(2, 3)] * 2 + [(1, 3)]
            for a, b in zip(expected, got, strict=True):
                assert torch.equal(a["index"], b["index"]) and torch.equal(a["audio"], b["audio"])
        for split in ("val", "test"):
            expected, got = list(host.loader(split)), list(device.loader(split))
            assert len(got) == (1 if eval_windows == "spread" else 2)  # all: one track a batch
            for a, b in zip(expected, got, strict=True):
                assert torch.equal(a["index"], b["index"]) and torch.equal(a["audio"], b["audio"])
                torch.testing.assert_close(a["labels"], b["labels"])
    val = list(host.loader("val"))  # eval_windows=all: every whole window of each track
    lengths = store.audio.lengths[store.splits == "val"]
    assert [b["audio"].shape[1] for b in val] == np.maximum(lengths // 6000, 1).tolist()


def test_check_and_the_config_read_a_store_of_tracks(
    track_store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, store = track_store
    cfg = compose_config("train", tmp_path / "run", ["data=store", f"data.path={store.path}"])
    assert cfg.data.subclip_len == 3 * RATE  # the default window of a store of tracks
    assert cfg.data.sample_rate == RATE
    module = StoreDataModule(str(store.path), sample_rate=RATE, n_subclips=2, subclip_len=6000,
                             batch_size=2)  # fmt: skip
    assert check_data(module, workers=2) == []
    assert module.describe()["track_samples"] == store.meta["track_samples"]
    with caplog.at_level("WARNING", logger="tagger.data.datamodule"):
        module.setup()
        module.setup()  # once
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "1 of 5 train tracks are shorter than one window", "1 of 2 test tracks are shorter "
        "than one window",
    ]  # fmt: skip


def write_v1_store(out: Path, n_clips: int = 12, clip_samples: int = 9600) -> np.ndarray:
    """A version 1 store exactly as the fixed-length writer lays it out (docs/data.md):
    audio.bin int16 [clips, clip_samples], labels.npy, clips.csv and its meta.json fields.
    Returns the audio."""
    rng = np.random.default_rng(1)
    out.mkdir()
    audio = np.stack([tones(rng, clip_samples, RATE) for _ in range(n_clips)])
    audio = np.rint(audio * 32768).astype("<i2")
    labels = (rng.random((n_clips, 3)) < 0.5).astype(np.uint8)
    labels[0], labels[1] = 1, 0  # each tag has a positive and a negative clip
    splits = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    (out / "audio.bin").write_bytes(audio.tobytes())
    np.save(out / "labels.npy", labels)
    with open(out / "clips.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "path", "split"])
        writer.writerows([f"c{i}", f"c{i}.wav", split] for i, split in enumerate(splits))
    meta = {
        "format_version": 1, "source": "folder", "root": str(out), "labels_file": str(out),
        "tag_set": "tags of the labels CSV, alphabetical", "split_rule": "split column",
        "dropped": {}, "sample_rate": RATE, "clip_samples": clip_samples,
        "clip_seconds": clip_samples / RATE, "dtype": "int16", "clips": n_clips,
        "counts": {"train": 8, "val": 2, "test": 2}, "tag_names": ["a", "b", "c"],
        "skipped": [], "truncated_files": "keep", "truncated": [], "created": "2026-01-01",
    }  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return audio


def test_a_version_1_store_reads_as_before(tmp_path: Path) -> None:
    audio = write_v1_store(tmp_path / "v1")
    store = ClipStore(tmp_path / "v1")
    assert store.version == 1 and store.audio.lengths is None and store.audio.shape == (12, 9600)
    np.testing.assert_array_equal(store.memmap(), audio)
    clips = ClipDataset(store.audio, store.labels, store.clip_ids, n_subclips=2, subclip_len=4000)
    np.testing.assert_array_equal(clips[3]["audio"][:, 0].numpy().ravel(), audio[3, :8000])
    assert EveryWindow(clips)[3]["audio"].shape == (2, 1, 4000)  # 9600 // 4000 whole windows
    sampler = EpochShuffleSampler(12, seed=2, with_epoch=True)
    windows = RandomWindows(clips, 2, seed=2)
    expected = np.random.default_rng([2, 0]).integers(0, 5601, size=(12, 2))  # as before
    np.testing.assert_array_equal(windows.epoch_starts(0), expected)
    assert len(list(sampler)) == 12


def test_every_window_of_clips_of_one_length_batches_as_usual(tmp_path: Path) -> None:
    audio = write_v1_store(tmp_path / "v1")
    args = {"sample_rate": RATE, "n_subclips": 1, "subclip_len": 4000, "batch_size": 5}
    host = StoreDataModule(str(tmp_path / "v1"), eval_windows="all", **args)
    device = StoreDataModule(str(tmp_path / "v1"), eval_windows="all", on_device=True, **args)
    expected, got = list(host.loader("test")), list(device.loader("test"))
    assert len(got) == 1 and got[0]["audio"].shape == (2, 2, 1, 4000)  # 9600 // 4000 windows
    assert torch.equal(expected[0]["audio"], got[0]["audio"])
    np.testing.assert_array_equal(got[0]["audio"][1].numpy().ravel(), audio[11, :8000])
    assert next(iter(host.loader("val")))["audio"].shape == (2, 2, 1, 4000)
    spread = StoreDataModule(str(tmp_path / "v1"), **args)
    assert next(iter(spread.loader("val")))["audio"].shape == (2, 1, 1, 4000)
    with pytest.raises(ConfigError, match=r"data\.eval_windows=some; choose one of: spread, all"):
        StoreDataModule(str(tmp_path / "v1"), eval_windows="some", **args)


@pytest.mark.slow
def test_a_version_1_store_trains(tmp_path: Path) -> None:
    write_v1_store(tmp_path / "v1")
    overrides = ["data=store", f"data.path={tmp_path / 'v1'}", "data.n_subclips=2", *QUICK]
    summary = train(compose_config("train", tmp_path / "run", overrides))
    assert (summary["train_clips"], summary["val_clips"], summary["test_clips"]) == (8, 2, 2)
    assert summary["config"]["data"]["subclip_len"] == 4800  # the clip in 2 windows, as before
    assert summary["dataset"]["clip_samples"] == 9600 and "test" in summary


@pytest.mark.slow
@pytest.mark.parametrize("eval_windows", ["spread", "all"])
def test_a_store_of_tracks_trains_on_random_windows(
    track_store, tmp_path: Path, eval_windows: str
) -> None:
    _, store = track_store
    overrides = [
        "data=store", f"data.path={store.path}", "data.random_windows=true",
        "data.train_subclips=1", "data.n_subclips=3", "data.subclip_len=6000",
        f"data.eval_windows={eval_windows}", *QUICK,
    ]  # fmt: skip
    summary = train(compose_config("train", tmp_path / "run", overrides))
    assert (summary["train_clips"], summary["val_clips"], summary["test_clips"]) == (5, 2, 2)
    assert summary["dataset"]["clip_samples"] is None
    assert summary["dataset"]["padded_tracks"] == 1
    assert np.isfinite(summary["final"]["val/loss"]) and "test" in summary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-seconds", "0"], "argument --max-seconds: must be a positive number of seconds"),
        (["--min-seconds", "-1"], "argument --min-seconds: "),
    ],
)
def test_bad_track_numbers_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    write_tracks(tmp_path / "audio", TRACKS[:2])
    root = tmp_path / "audio"
    argv = ["folder", "--root", str(root), "--labels", str(root / "labels.csv")]
    with pytest.raises(SystemExit) as stopped:
        prepare([*argv, "--out", str(tmp_path / "store"), "--clip-seconds", "none", *args])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
