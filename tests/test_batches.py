"""Batches read whole (``ClipDataset.__getitems__``) hold exactly the clips' samples."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tagger.config import ConfigError
from tagger.data.clips import BadClipError, ClipDataset, RandomWindows, collate_clips
from tagger.data.coursework import CLIP_SAMPLES, NpyClipFiles
from tagger.data.store import ClipStore, StoreClip, StorePlan, StoreWriter
from tagger.data.store_data import StoreDataModule

N_CLIPS, N_SUBCLIPS, SUBCLIP_LEN = 6, 3, 1000


@pytest.fixture
def raw() -> np.ndarray:
    return np.random.default_rng(0).integers(-30_000, 30_000, (N_CLIPS, 4000), dtype=np.int16)


def _store(tmp_path: Path, raw: np.ndarray) -> Path:
    clips = [StoreClip(f"c{i}", Path(f"c{i}.wav"), f"c{i}", "val" if i >= 4 else "train",
                       np.eye(2)[i % 2]) for i in range(len(raw))]  # fmt: skip
    writer = StoreWriter(tmp_path / "store", StorePlan(clips, ["a", "b"], 8000, raw.shape[1], {}))
    for i, clip in enumerate(raw):
        writer.add(i, clip)
    return writer.finish()


def _expected(raw: np.ndarray, indices: list[int]) -> np.ndarray:
    return raw[indices, : N_SUBCLIPS * SUBCLIP_LEN].reshape(
        len(indices), N_SUBCLIPS, 1, SUBCLIP_LEN
    )


@pytest.mark.parametrize("kind", ["array", "store", "npy_files"])
def test_a_batch_is_the_clips_samples_in_the_order_asked(
    kind: str, raw: np.ndarray, tmp_path: Path
) -> None:
    labels = np.eye(N_CLIPS, 4)
    if kind == "array":
        audio = raw
    elif kind == "store":
        audio = ClipStore(_store(tmp_path, raw)).audio
    else:  # one float32 .npy per clip, as the coursework's copy
        paths = []
        for i, clip in enumerate(raw):
            paths.append(tmp_path / f"{i}.npy")
            np.save(paths[-1], np.resize(clip.astype(np.float32), CLIP_SAMPLES))
        audio = NpyClipFiles(paths, [p.name for p in paths])
    dataset = ClipDataset(audio, labels, [f"c{i}" for i in range(N_CLIPS)], N_SUBCLIPS, SUBCLIP_LEN)
    indices = [4, 0, 5]
    batch = dataset.__getitems__(indices)
    expected_dtype = torch.float32 if kind == "npy_files" else torch.int16  # int16 as stored
    assert batch["audio"].dtype == expected_dtype
    np.testing.assert_array_equal(batch["audio"].numpy(), _expected(raw, indices))
    np.testing.assert_array_equal(batch["labels"].numpy(), labels[indices])
    assert batch["labels"].dtype == torch.float32
    assert batch["index"].tolist() == indices
    one = dataset[5]  # an item is its one-clip batch
    assert one["index"] == 5 and torch.equal(one["audio"], batch["audio"][2])


def test_the_loader_reads_store_splits_through_one_batch_read(
    raw: np.ndarray, tmp_path: Path
) -> None:
    store = _store(tmp_path, raw)
    datamodule = StoreDataModule(str(store), sample_rate=8000, n_subclips=N_SUBCLIPS,
                                 subclip_len=SUBCLIP_LEN, batch_size=4)  # fmt: skip
    datamodule.setup()
    split = datamodule.splits["train"]
    rows = [ClipStore(store).clip_ids.index(clip_id) for clip_id in split.clip_ids]
    for batch in datamodule.loader("train"):
        np.testing.assert_array_equal(
            batch["audio"].numpy(), _expected(raw[rows], batch["index"].tolist())
        )


def test_a_nan_clip_in_a_batch_is_named(raw: np.ndarray) -> None:
    audio = raw.astype(np.float64)
    audio[3, 10] = np.nan
    dataset = ClipDataset(audio, np.eye(N_CLIPS, 2), [f"c{i}" for i in range(N_CLIPS)], 2, 1000)
    assert dataset.__getitems__([0, 1])["audio"].dtype == torch.float32  # float64 -> float32
    with pytest.raises(BadClipError, match=r"clip c3 \(row 3\) has NaN"):
        dataset.__getitems__([1, 3, 2])


def test_random_window_batches_equal_their_items(raw: np.ndarray) -> None:
    dataset = ClipDataset(raw, np.eye(N_CLIPS, 2), [f"c{i}" for i in range(N_CLIPS)], 3, 1000)
    windows = RandomWindows(dataset, n_windows=2, seed=1)
    keys = [(2, 0), (5, 0), (2, 1)]
    batch = next(iter(DataLoader(windows, batch_size=3, sampler=keys, collate_fn=collate_clips)))
    assert batch["audio"].shape == (3, 2, 1, 1000)
    for row, key in enumerate(keys):
        assert torch.equal(batch["audio"][row], windows[key]["audio"])
    assert not torch.equal(batch["audio"][0], batch["audio"][2])  # new offsets each epoch


def test_a_store_is_read_through_a_memory_map_where_there_is_no_preadv(
    raw: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "preadv")
    audio = ClipStore(_store(tmp_path, raw)).audio
    np.testing.assert_array_equal(audio.read_rows([3, 1], 2000), raw[[3, 1], :2000])
    np.testing.assert_array_equal(audio[5], raw[5])


def test_a_store_cut_short_while_open_is_named(raw: np.ndarray, tmp_path: Path) -> None:
    store = _store(tmp_path, raw)
    audio = ClipStore(store).audio
    os.truncate(store / "audio.bin", raw[:4].nbytes + 100)  # clip 4 half there, 5 gone
    np.testing.assert_array_equal(audio.read_rows([3], 4000)[0], raw[3])
    with pytest.raises(ConfigError, match=r"audio.bin ended inside clip row 4: .*prepare it again"):
        audio.read_rows([2, 4], 4000)
