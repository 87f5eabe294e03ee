"""``data=coursework``: the coursework's preprocessed MTAT copy, read in place."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tagger.data.clips import BadClipError
from tagger.data.coursework import CourseworkDataModule
from tagger.data.tagsets import MERGED50
from tagger.errors import ConfigError
from tagger.module import TaggingModule
from tagger.train import train
from tests.conftest import REPO_ROOT, compose_config, run_cli
from tests.fixtures_mtat import Coursework, write_coursework, write_coursework_three

QUICK = [
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
]
LOADER = {"sample_rate": 12000, "n_subclips": 10, "subclip_len": 34950, "batch_size": 4}


@pytest.fixture(scope="module")
def coursework(tmp_path_factory: pytest.TempPathFactory) -> Coursework:
    return write_coursework(tmp_path_factory.mktemp("coursework"))


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Coursework:
    """The three-pickle layout: train parts 0, a, b; val part c; test parts d, f."""
    return write_coursework_three(tmp_path_factory.mktemp("three"))


def test_trains_and_clips_reach_the_model_unchanged(
    coursework: Coursework, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, dict[str, torch.Tensor]]] = []
    shared_step = TaggingModule._shared_step

    def recording_step(self: TaggingModule, batch: dict, stage: str) -> torch.Tensor:
        seen.append((stage, {key: value.clone() for key, value in batch.items()}))
        return shared_step(self, batch, stage)

    monkeypatch.setattr(TaggingModule, "_shared_step", recording_step)
    cfg = compose_config(
        "train", tmp_path / "run", ["data=coursework", f"data.root={coursework.root}", *QUICK]
    )
    summary = train(cfg)

    # train pickle: parts 0, 1, c (2 clips each), part c carved out for validation
    assert (summary["train_clips"], summary["val_clips"], summary["test_clips"]) == (4, 2, 4)
    assert summary["tag_names"] == list(MERGED50)
    assert summary["dataset"]["validation"] == "part(s) c of train_labels.pkl"
    # the protocol tagger report matches published figures on
    assert (summary["dataset"]["tag_set"], summary["dataset"]["split"]) == (
        "merged50",
        "coursework",
    )
    tested = [batch for stage, batch in seen if stage == "test"]
    assert sum(len(batch["index"]) for batch in tested) == 4
    for batch in tested:
        assert batch["audio"].shape[1:] == (10, 1, 34950)
        for row, audio, labels in zip(batch["index"], batch["audio"], batch["labels"], strict=True):
            clip = coursework.val.iloc[int(row)]
            samples = np.load(coursework.root / "samples" / clip["file_path"])
            np.testing.assert_array_equal(audio.numpy(), samples.reshape(10, 1, 34950))
            np.testing.assert_array_equal(labels.numpy(), clip["label"].astype(np.float32))
    trained = {stage for stage, _ in seen}
    assert trained == {"train", "val", "test"}


def test_validation_by_part_by_fraction_or_on_the_test_split(coursework: Coursework) -> None:
    def sizes(**options: object) -> dict[str, int]:
        return CourseworkDataModule(str(coursework.root), **options, **LOADER).split_sizes()

    assert sizes(val_parts=["c"]) == {"train_clips": 4, "val_clips": 2, "test_clips": 4}
    assert sizes(val_fraction=0.5, split_seed=3) == {
        "train_clips": 3,
        "val_clips": 3,
        "test_clips": 4,
    }
    data = CourseworkDataModule(str(coursework.root), **LOADER)
    assert data.split_sizes() == {"train_clips": 6, "val_clips": 4, "test_clips": 4}
    assert data.splits["val"] is data.splits["test"]
    assert data.describe()["validation"] == "the test split (val_labels.pkl), as in the coursework"


def test_samples_stored_as_int16_or_as_10_rows_are_accepted(
    coursework: Coursework, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    copy = write_coursework(root, train_parts="0c", val_parts="d", per_part=1)
    flat = np.load(root / "samples" / copy.train.iloc[0]["file_path"])
    np.save(root / "samples" / copy.train.iloc[0]["file_path"], flat.astype(np.int16))
    np.save(root / "samples" / copy.val.iloc[0]["file_path"], flat.reshape(10, 34950))
    data = CourseworkDataModule(str(root), val_parts=["c"], **LOADER)
    data.setup()
    np.testing.assert_array_equal(data.splits["train"][0]["audio"].flatten(), flat)
    np.testing.assert_array_equal(data.splits["test"][0]["audio"].flatten(), flat)


def _copy(coursework: Coursework, root: Path) -> Path:
    """A copy of the fixture's pickles whose file paths point into the fixture's samples."""
    (root / "annotations").mkdir(parents=True)
    (root / "samples").symlink_to(coursework.root / "samples")
    coursework.train.to_pickle(root / "annotations" / "train_labels.pkl", protocol=4)
    coursework.val.to_pickle(root / "annotations" / "val_labels.pkl", protocol=4)
    return root


def test_bad_pickles_are_named(coursework: Coursework, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.root=.*nowhere: no such directory"):
        CourseworkDataModule(str(tmp_path / "nowhere"), **LOADER)

    root = _copy(coursework, tmp_path / "columns")
    renamed = coursework.train.rename(columns={"label": "labels"})
    renamed.to_pickle(root / "annotations" / "train_labels.pkl", protocol=4)
    with pytest.raises(ConfigError) as error:
        CourseworkDataModule(str(root), **LOADER).setup()
    assert "train_labels.pkl: expected a pandas DataFrame with columns file_path, label, part" in (
        str(error.value)
    )

    root = _copy(coursework, tmp_path / "width")
    narrow = coursework.val.copy()
    narrow.at[narrow.index[1], "label"] = np.zeros(49)
    narrow.to_pickle(root / "annotations" / "val_labels.pkl", protocol=4)
    with pytest.raises(ConfigError) as error:
        CourseworkDataModule(str(root), **LOADER).setup()
    assert "val_labels.pkl row 1 (val/d/" in str(error.value)
    assert "label has shape (49,); expected (50,), the merged50 tags" in str(error.value)

    root = _copy(coursework, tmp_path / "missing")
    moved = coursework.val.copy()
    moved["file_path"] = moved["file_path"].str.replace("val/", "test/")
    moved.to_pickle(root / "annotations" / "val_labels.pkl", protocol=4)
    with pytest.raises(ConfigError, match=r"4 sample file\(s\) .* do not exist, e.g. .*test/d/"):
        CourseworkDataModule(str(root), **LOADER).setup()

    root = _copy(coursework, tmp_path / "empty")
    coursework.val.iloc[:0].to_pickle(root / "annotations" / "val_labels.pkl", protocol=4)
    with pytest.raises(ConfigError, match=r"val_labels.pkl: the DataFrame has no rows; expected"):
        CourseworkDataModule(str(root), **LOADER).setup()

    root = _copy(coursework, tmp_path / "not-a-path")
    numbered = coursework.train.copy()
    numbered["file_path"] = numbered["file_path"].astype(object)
    numbered.at[numbered.index[2], "file_path"] = float("nan")
    numbered.to_pickle(root / "annotations" / "train_labels.pkl", protocol=4)
    with pytest.raises(ConfigError, match=r"train_labels.pkl row 2: file_path is nan, not a path"):
        CourseworkDataModule(str(root), **LOADER).setup()


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: np.save(path, np.zeros(349_000, np.float32)),
         "holds shape (349000,); expected 349,500 samples"),
        (lambda path: np.save(path, np.zeros(349_500, np.int64)),
         "holds int64 samples; expected float32 or int16"),
        (lambda path: np.save(path, np.zeros((2, 349_500), np.float32)), "holds shape (2, 349500)"),
        (_truncated, "is truncated: 1,397,128 bytes, its header promises 1,398,128"),
        (lambda path: path.write_bytes(b"not a numpy file"), "is not a readable .npy"),
    ],
)  # fmt: skip
def test_a_bad_sample_file_header_stops_the_start(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    root = tmp_path / "copy"
    copy = write_coursework(root, train_parts="0", val_parts="d", per_part=2)
    bad = copy.train.iloc[1]["file_path"]
    damage(root / "samples" / bad)
    data = CourseworkDataModule(str(root), val_fraction=0.5, **LOADER)
    with pytest.raises(BadClipError) as error:
        data.setup()
    assert f"1 of 4 sample files cannot be used (replace or remove them): clip {bad}: " in str(
        error.value
    )
    assert message in str(error.value)


def test_every_bad_sample_file_is_named_in_one_error(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    copy = write_coursework(root, train_parts="0c", val_parts="d", per_part=2)
    bad = [copy.train.iloc[0]["file_path"], copy.val.iloc[1]["file_path"]]
    _truncated(root / "samples" / bad[0])
    np.save(root / "samples" / bad[1], np.zeros(10, np.int16))
    with pytest.raises(BadClipError) as error:
        CourseworkDataModule(str(root), **LOADER).setup()
    message = str(error.value)
    assert message.startswith("2 of 6 sample files cannot be used") and "\n" not in message
    assert f"clip {bad[0]}: " in message and "is truncated" in message
    assert f"clip {bad[1]}: " in message and "holds shape (10,)" in message


def test_nan_samples_are_an_error_naming_the_clip_when_read(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    copy = write_coursework(root, train_parts="0", val_parts="d", per_part=2)
    bad = copy.train.iloc[1]["file_path"]
    np.save(root / "samples" / bad, np.full(349_500, np.nan, np.float32))
    data = CourseworkDataModule(str(root), val_fraction=0.5, **LOADER)
    data.setup()  # the header is fine; the samples are read when the clip is
    with pytest.raises(BadClipError) as error:
        for split in ("train", "val"):
            for _ in data.loader(split):
                pass
    assert f"clip {bad}" in str(error.value) and "has NaN or infinite samples" in str(error.value)


def test_training_stops_at_a_bad_sample_before_it_starts(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    copy = write_coursework(root, train_parts="0c", val_parts="d", per_part=2)
    bad = copy.val.iloc[0]["file_path"]  # a test clip: training would reach it last
    np.save(root / "samples" / bad, np.zeros(1000, np.float32))
    cfg = compose_config(
        "train", tmp_path / "run", ["data=coursework", f"data.root={root}", *QUICK]
    )
    with pytest.raises(BadClipError, match=f"clip {bad}: .* holds shape \\(1000,\\)"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # no epoch ran


def test_labels_come_from_the_pickle_in_row_order(coursework: Coursework) -> None:
    data = CourseworkDataModule(str(coursework.root), **LOADER)
    data.setup()
    test = data.splits["test"]
    assert test.clip_ids == list(coursework.val["file_path"])
    expected = np.stack(coursework.val["label"].to_list()).astype(np.float32)
    np.testing.assert_array_equal(test.labels, expected)
    assert list(coursework.val.index) == [6, 7, 8, 9]  # the val index continues after train


def test_the_two_pickle_layout_is_named_with_its_clip_counts(coursework: Coursework) -> None:
    data = CourseworkDataModule(str(coursework.root), val_parts=["c"], **LOADER)
    assert data.split_sizes() == {"train_clips": 4, "val_clips": 2, "test_clips": 4}
    described = data.describe()
    assert described["layout"] == "two pickles"
    assert described["pickles"] == {"train": "train_labels.pkl", "test": "val_labels.pkl"}
    assert described["clips"] == {"train": 4, "val": 2, "test": 4}


def test_the_three_pickle_layout_reads_each_split_from_its_own_pickle(
    three: Coursework, caplog: pytest.LogCaptureFixture
) -> None:
    assert all(path.startswith("train/c/") for path in three.val["file_path"])
    assert set(three.train["part"]) == {"0", "a", "b"} and set(three.test["part"]) == {"d", "f"}
    data = CourseworkDataModule(str(three.root), val_parts=["c"], **LOADER)  # the default
    with caplog.at_level("INFO", logger="tagger.data.coursework"):
        assert data.split_sizes() == {"train_clips": 6, "val_clips": 2, "test_clips": 4}
    assert "three pickles layout (train_labels.pkl, val_labels.pkl, test_labels.pkl); " \
        "train 6, val 2, test 4 clips" in caplog.text  # fmt: skip
    for split, frame in (("train", three.train), ("val", three.val), ("test", three.test)):
        assert data.splits[split].clip_ids == list(frame["file_path"])
        expected = np.stack(frame["label"].to_list()).astype(np.float32)
        np.testing.assert_array_equal(data.splits[split].labels, expected)
    described = data.describe()
    assert (described["layout"], described["validation"]) == (
        "three pickles",
        "val_labels.pkl (three-pickle layout)",
    )
    assert described["clips"] == {"train": 6, "val": 2, "test": 4}
    # nothing is carved: without val_parts the split is the same
    data = CourseworkDataModule(str(three.root), **LOADER)
    assert data.split_sizes() == {"train_clips": 6, "val_clips": 2, "test_clips": 4}


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickles_of_other_protocols_load(tmp_path: Path, protocol: int) -> None:
    copy = write_coursework_three(tmp_path, train_parts="0", test_parts="d", per_part=1,
                                  protocol=protocol)  # fmt: skip
    data = CourseworkDataModule(str(copy.root), **LOADER)
    assert data.split_sizes() == {"train_clips": 1, "val_clips": 1, "test_clips": 1}


def test_layouts_that_fit_neither_are_named(three: Coursework, tmp_path: Path) -> None:
    def copy(name: str, **frames: object) -> Path:
        root = tmp_path / name
        (root / "annotations").mkdir(parents=True)
        (root / "samples").symlink_to(three.root / "samples")
        for split, frame in frames.items():
            frame.to_pickle(root / "annotations" / f"{split}_labels.pkl")
        return root

    root = copy("no-val", train=three.train, test=three.test)
    with pytest.raises(ConfigError) as error:
        CourseworkDataModule(str(root), **LOADER).setup()
    assert str(error.value) == (
        f"{root / 'annotations'} holds test_labels.pkl, train_labels.pkl; expected "
        "train_labels.pkl and val_labels.pkl (two-pickle layout) or those and "
        "test_labels.pkl (three-pickle layout)"
    )

    overlapping = pd.concat([three.val, three.test.iloc[:1]])
    root = copy("overlap", train=three.train, val=overlapping, test=three.test)
    clip = three.test.iloc[0]["file_path"]
    with pytest.raises(ConfigError) as error:
        CourseworkDataModule(str(root), **LOADER).setup()
    assert str(error.value) == (
        f"{root / 'annotations' / 'val_labels.pkl'} row {len(three.val)} and "
        f"{root / 'annotations' / 'test_labels.pkl'} row 0: both list {clip}; list each file once"
    )

    with pytest.raises(ConfigError, match=r"data\.val_fraction are for the two-pickle layout"):
        CourseworkDataModule(str(three.root), val_fraction=0.1, **LOADER).setup()


@pytest.mark.slow
def test_train_py_on_the_three_pickle_layout(three: Coursework, tmp_path: Path) -> None:
    result = run_cli(
        str(REPO_ROOT / "train.py"), "data=coursework", f"data.root={three.root}", *QUICK,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "three pickles layout" in result.stdout
    (path,) = (tmp_path / "outputs" / "train" / "runs").glob("*/metrics.json")
    metrics = json.loads(path.read_text())
    assert (metrics["train_clips"], metrics["val_clips"], metrics["test_clips"]) == (6, 2, 4)
    assert metrics["dataset"]["layout"] == "three pickles"
    assert metrics["dataset"]["clips"] == {"train": 6, "val": 2, "test": 4}
    assert metrics["test"]["checkpoint"] != "final weights"  # tested on test_labels.pkl
