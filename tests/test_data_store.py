"""The clip store: interrupted prepares, reading, windows, and damaged stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tagger.cli.prepare import prepare
from tagger.data.clips import ClipDataset, RandomWindows
from tagger.data.sampler import EpochShuffleSampler
from tagger.data.sources import ArrayClips
from tagger.data.store import ClipStore, partial_dir
from tagger.data.store_data import StoreDataModule
from tagger.errors import ConfigError
from tagger.prepare import build
from tests.conftest import REPO_ROOT, run_tagger
from tests.fixtures_mtat import tones, write_raw_mtat

#: Decodes as ``tagger prepare`` does, but 50 ms slower per file, so it can be killed midway.
SLOW_PREPARE = (
    "import sys, time; from tagger.prepare import build; decode = build.decode_or_reason; "
    "build.decode_or_reason = lambda *a: (time.sleep(0.05), decode(*a))[1]; "
    "from tagger.cli.prepare import main; main()"
)


def write_many(root: Path, n_files: int) -> Path:
    """``n_files`` short wav files and their labels CSV (split column included)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    rows = ["path,tags,split"]
    for i in range(n_files):
        soundfile.write(root / f"{i:03d}.wav", tones(rng, 4000, 8000), 8000)
        rows.append(f"{i:03d}.wav,{'low' if i % 2 else 'high;low'},{['train', 'val'][i % 5 == 0]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def folder_args(root: Path, out: Path, clip_seconds: str = "0.5") -> list[str]:
    """``tagger prepare`` arguments: the folder at ``root`` as clips at 8 kHz in ``out``."""
    args = ["folder", "--root", str(root), "--labels", str(root / "labels.csv"), "--out", str(out)]
    return [*args, "--sample-rate", "8000", "--clip-seconds", clip_seconds]


@pytest.mark.slow  # a real prepare killed with SIGKILL, then another resuming it
def test_a_killed_prepare_leaves_no_store_and_resumes(tmp_path: Path) -> None:
    write_many(tmp_path / "audio", 40)
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", SLOW_PREPARE, *folder_args(tmp_path / "audio", out)]
    process = subprocess.Popen([*command, "--workers", "1"], env=env, stderr=subprocess.DEVNULL)
    log = partial_dir(out) / "done.jsonl"
    deadline = time.time() + 60
    while not (log.is_file() and log.read_text().count("\n") >= 8) and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed before it finished

    assert not out.exists()  # nothing named like the store
    assert not (partial_dir(out) / "meta.json").exists()
    with pytest.raises(ConfigError, match="is an unfinished prepare: run the same"):
        ClipStore(out)
    committed = log.read_text().count("\n")
    assert 8 <= committed < 40

    again = [sys.executable, "-m", "tagger.cli.prepare", *folder_args(tmp_path / "audio", out)]
    resumed = subprocess.run(again, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the interrupted prepare" in resumed.stderr
    assert f"{committed}/40" in resumed.stderr  # the progress bar starts where it stopped
    assert not partial_dir(out).exists()

    prepare([*folder_args(tmp_path / "audio", tmp_path / "fresh"), "--workers", "1"])
    store, fresh = ClipStore(out), ClipStore(tmp_path / "fresh")
    np.testing.assert_array_equal(store.memmap(), fresh.memmap())
    np.testing.assert_array_equal(store.labels, fresh.labels)
    assert store.clip_ids == fresh.clip_ids and store.meta["counts"] == fresh.meta["counts"]


def test_an_interrupted_prepare_with_other_settings_is_not_mixed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_many(tmp_path / "audio", 20)
    decode, calls = build.decode_or_reason, []

    def failing(*args: object) -> object:
        calls.append(args)
        if len(calls) == 18:  # after the first commit (8 files; 8 more are decoded ahead)
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(build, "decode_or_reason", failing)
    args = folder_args(tmp_path / "audio", tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        prepare([*args, "--workers", "1"])
    monkeypatch.setattr(build, "decode_or_reason", decode)
    assert (partial_dir(tmp_path / "store") / "plan.json").is_file()

    other = folder_args(tmp_path / "audio", tmp_path / "store", clip_seconds="0.4")

    with pytest.raises(ConfigError, match="holds an unfinished prepare with other settings"):
        prepare([*other, "--workers", "1"])
    prepare([*other, "--workers", "1", "--restart"])
    assert ClipStore(tmp_path / "store").clip_samples == 3200


def test_store_files_and_a_damaged_store(tmp_path: Path) -> None:
    write_many(tmp_path / "audio", 6)
    prepare([*folder_args(tmp_path / "audio", tmp_path / "store"), "--workers", "1"])
    store = ClipStore(tmp_path / "store")
    names = sorted(path.name for path in (tmp_path / "store").iterdir())
    assert names == ["audio.bin", "clips.csv", "labels.npy", "meta.json"]
    raw = np.memmap(tmp_path / "store" / "audio.bin", "<i2", "r", shape=(6, 4000))
    assert store.audio.shape == (6, 4000)
    for row in range(6):
        np.testing.assert_array_equal(store.audio[row], raw[row])
    assert store.labels.dtype == np.uint8 and store.labels.shape == (6, 2)

    with open(tmp_path / "store" / "audio.bin", "r+b") as f:
        f.truncate(5 * 4000 * 2)
    with pytest.raises(ConfigError, match=r"audio.bin has 40000 bytes, not 48000.*damaged"):
        ClipStore(tmp_path / "store")


def test_random_windows_depend_only_on_seed_epoch_and_clip() -> None:
    audio = ArrayClips(np.arange(3 * 1000, dtype=np.int16).reshape(3, 1000))
    clips = ClipDataset(audio, np.eye(3), ["a", "b", "c"], n_subclips=4, subclip_len=250)
    windows = RandomWindows(clips, n_windows=2, seed=7)
    sampler = EpochShuffleSampler(3, seed=7, with_epoch=True)
    sampler.set_epoch(4)
    keys = list(sampler)
    assert {key[1] for key in keys} == {4}
    first = [windows[key]["audio"] for key in keys]
    again = [RandomWindows(clips, 2, seed=7)[key]["audio"] for key in keys]
    for a, b in zip(first, again, strict=True):
        assert a.shape == (2, 1, 250) and (a == b).all()
    item = windows[(1, 4)]["audio"][:, 0].numpy().astype(int)
    for window in item:  # each window is a run of consecutive samples of clip 1
        assert window[0] >= 1000 and (np.diff(window) == 1).all()
    assert not (windows[(1, 5)]["audio"] == windows[(1, 4)]["audio"]).all()
    assert clips[1]["audio"].shape == (4, 1, 250)  # evaluation: every consecutive window


def test_a_store_without_val_split_carves_one(tmp_path: Path) -> None:
    raw = write_raw_mtat(tmp_path / "mtat", parts="0cd", clips_per_part=2, seconds=0.5)
    out = tmp_path / "store"
    argv = ["mtat", "--root", str(raw.root), "--out", str(out), "--split", "coursework"]
    prepare([*argv, "--tags", "merged50", "--workers", "1", "--sample-rate", "8000"])
    loader = {"sample_rate": 8000, "n_subclips": 2, "subclip_len": 4096, "batch_size": 2}
    counts = json.loads((out / "meta.json").read_text())["counts"]
    assert counts["val"] == 0

    by_part = StoreDataModule(str(out), val_parts=["c"], **loader)
    sizes = by_part.split_sizes()
    assert sizes["val_clips"] == 2 and sizes["train_clips"] == counts["train"] - 2
    store = by_part.store
    val_paths = [
        store.source_paths[store.clip_ids.index(i)] for i in by_part.splits["val"].clip_ids
    ]
    assert all(path.startswith("c/") for path in val_paths)
    assert by_part.describe()["split"] == "coursework"  # what tagger report matches on
    on_test = StoreDataModule(str(out), **loader)
    assert on_test.split_sizes()["val_clips"] == counts["test"]
    with pytest.raises(ConfigError, match=r"data\.sample_rate=16000, but the store"):
        StoreDataModule(str(out), **{**loader, "sample_rate": 16000})
    with pytest.raises(ConfigError, match=r"clips have 233000 samples but .* 2 x 200000"):
        StoreDataModule(str(out), **{**loader, "subclip_len": 200_000}).setup()


def test_train_py_names_a_missing_store(tmp_path: Path) -> None:
    done = run_tagger("train", "data=store", f"data.path={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert done.returncode == 2
    assert f"tagger: error: data.path={tmp_path / 'nowhere'} is not a clip store" in done.stderr
