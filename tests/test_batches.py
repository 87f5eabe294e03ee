"""Every clip source reads a batch of windows in one call, holding exactly the clips' samples."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_convert

from tagger.data.clips import BadClipError, ClipDataset, RandomWindows
from tagger.data.coursework import CLIP_SAMPLES, NpyClipFiles
from tagger.data.sources import ArrayClips, ClipSource
from tagger.data.store import ClipStore
from tagger.data.store_data import StoreDataModule
from tagger.errors import ConfigError
from tagger.prepare.writer import StoreClip, StorePlan, StoreWriter

N_CLIPS, N_SUBCLIPS, SUBCLIP_LEN = 6, 3, 1000
KINDS = ["array", "store", "npy_files"]


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


def _source(kind: str, raw: np.ndarray, tmp_path: Path) -> ClipSource:
    """``raw`` as a source of the given kind (its first 4000 samples, for .npy files)."""
    if kind == "array":
        return ArrayClips(raw)
    if kind == "store":
        return ClipStore(_store(tmp_path, raw)).audio
    paths = []  # one float32 .npy per clip, as the coursework's copy
    for i, clip in enumerate(raw):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], np.resize(clip.astype(np.float32), CLIP_SAMPLES))
    return NpyClipFiles(paths, [p.name for p in paths])


def _expected(raw: np.ndarray, indices: list[int]) -> np.ndarray:
    return raw[indices, : N_SUBCLIPS * SUBCLIP_LEN].reshape(
        len(indices), N_SUBCLIPS, 1, SUBCLIP_LEN
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_is_the_clips_samples_in_the_order_asked(
    kind: str, raw: np.ndarray, tmp_path: Path
) -> None:
    labels = np.eye(N_CLIPS, 4)
    source = _source(kind, raw, tmp_path)
    ids = [f"c{i}" for i in range(N_CLIPS)]
    dataset = ClipDataset(source, labels, ids, N_SUBCLIPS, SUBCLIP_LEN)
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


@pytest.mark.parametrize("kind", KINDS)
def test_windows_anywhere_in_the_clips_are_read_in_one_call(
    kind: str, raw: np.ndarray, tmp_path: Path
) -> None:
    source = _source(kind, raw, tmp_path)
    indices = np.array([5, 1, 5])
    starts = np.array([[2999, 7, 1000], [0, 3000, 1500], [3, 2, 1]])  # overlapping, any order
    got = source.read(indices, starts, 1000)
    assert got.shape == (3, 3, 1, 1000) and got.dtype == source.dtype
    for b, clip in enumerate(indices):
        for w, start in enumerate(starts[b]):
            np.testing.assert_array_equal(got[b, w, 0], raw[clip, start : start + 1000])
    shifted = source.read(np.array([2, 3]), np.array([[500, 1500]]), 1000)  # the same for all
    np.testing.assert_array_equal(shifted.reshape(2, 2000), raw[[2, 3], 500:2500])


@pytest.mark.parametrize("split", ["train", "val"])  # val: rows 4 and 5 of the store
def test_the_loader_reads_store_splits_through_one_batch_read(
    split: str, raw: np.ndarray, tmp_path: Path
) -> None:
    store = _store(tmp_path, raw)
    datamodule = StoreDataModule(str(store), sample_rate=8000, n_subclips=N_SUBCLIPS,
                                 subclip_len=SUBCLIP_LEN, batch_size=4)  # fmt: skip
    datamodule.setup()
    ids = ClipStore(store).clip_ids
    rows = [ids.index(clip_id) for clip_id in datamodule.splits[split].clip_ids]
    seen = []
    for batch in datamodule.loader(split):
        seen += batch["index"].tolist()
        np.testing.assert_array_equal(
            batch["audio"].numpy(), _expected(raw[rows], batch["index"].tolist())
        )
    assert seen == list(range(len(rows))) and rows == ([0, 1, 2, 3] if split == "train" else [4, 5])


def test_a_nan_clip_in_a_batch_is_named(raw: np.ndarray) -> None:
    audio = raw.astype(np.float64)
    audio[3, 10] = np.nan
    ids = [f"c{i}" for i in range(N_CLIPS)]
    dataset = ClipDataset(ArrayClips(audio), np.eye(N_CLIPS, 2), ids, 2, 1000)
    assert dataset.__getitems__([0, 1])["audio"].dtype == torch.float32  # float64 -> float32
    with pytest.raises(BadClipError, match=r"clip c3 \(row 3\) has NaN"):
        dataset.__getitems__([1, 3, 2])


def test_random_window_batches_equal_their_items(raw: np.ndarray) -> None:
    ids = [f"c{i}" for i in range(N_CLIPS)]
    dataset = ClipDataset(ArrayClips(raw), np.eye(N_CLIPS, 2), ids, 3, 1000)
    windows = RandomWindows(dataset, n_windows=2, seed=1)
    keys = [(2, 0), (5, 0), (2, 1)]
    loader = DataLoader(windows, batch_size=3, sampler=keys, collate_fn=default_convert)
    batch = next(iter(loader))
    assert batch["audio"].shape == (3, 2, 1, 1000)
    for row, key in enumerate(keys):
        assert torch.equal(batch["audio"][row], windows[key]["audio"])
    assert not torch.equal(batch["audio"][0], batch["audio"][2])  # new offsets each epoch


def test_a_store_is_read_through_a_memory_map_where_there_is_no_preadv(
    raw: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "preadv")
    audio = ClipStore(_store(tmp_path, raw)).audio
    consecutive = audio.read(np.array([3, 1]), np.array([[0, 1000]]), 1000)
    np.testing.assert_array_equal(consecutive.reshape(2, 2000), raw[[3, 1], :2000])
    anywhere = audio.read(np.array([2]), np.array([[2500, 10]]), 1000)
    np.testing.assert_array_equal(anywhere[0, :, 0], [raw[2, 2500:3500], raw[2, 10:1010]])
    np.testing.assert_array_equal(audio[5], raw[5])


def test_a_store_cut_short_while_open_is_named(raw: np.ndarray, tmp_path: Path) -> None:
    store = _store(tmp_path, raw)
    audio = ClipStore(store).audio
    os.truncate(store / "audio.bin", raw[:4].nbytes + 100)  # clip 4 half there, 5 gone
    np.testing.assert_array_equal(audio[3], raw[3])
    with pytest.raises(ConfigError, match=r"audio.bin ended inside clip row 4: .*prepare it again"):
        audio.read(np.array([2, 4]), np.array([[0]]), 4000)
