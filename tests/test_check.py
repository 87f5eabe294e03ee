"""``tagger check``: every unusable clip of a data set listed before anyone trains on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagger.check import ClipProblem, check_data
from tagger.data.coursework import CourseworkDataModule
from tests.conftest import run_tagger
from tests.fixtures_mtat import write_coursework


def spoil(root: Path) -> tuple[str, str]:
    """A coursework fixture at ``root`` with one truncated and one NaN ``.npy``: their ids."""
    coursework = write_coursework(root, per_part=1)
    truncated, with_nan = coursework.train["file_path"].iloc[1], coursework.val["file_path"].iloc[0]
    path = root / "samples" / truncated
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    path = root / "samples" / with_nan
    samples = np.load(path)
    samples[1000] = np.nan
    np.save(path, samples)
    return truncated, with_nan


def test_check_lists_a_truncated_and_a_nan_clip(tmp_path: Path) -> None:
    truncated, with_nan = spoil(tmp_path / "cw")
    done = run_tagger("check", "data=coursework", f"data.root={tmp_path / 'cw'}", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    output = done.stdout + done.stderr
    assert truncated in output and with_nan in output
    assert "Traceback" not in output
    if "check:" not in done.stderr:  # the data module read every file: one line per clip
        lines = done.stdout.splitlines()
        assert lines[0].startswith(f"train: clip {truncated}: ") and "not a readable" in lines[0]
        assert lines[1].startswith(f"test: clip {with_nan} ") and "NaN or infinite" in lines[1]
        assert lines[2:] == ["checked 5 clips (train 2, val 1, test 2): 2 problem clips"]


def test_check_of_clean_data_and_of_bad_settings(tmp_path: Path) -> None:
    write_coursework(tmp_path / "cw", per_part=1)
    module = CourseworkDataModule(
        str(tmp_path / "cw"), val_parts=["c"], sample_rate=12000, n_subclips=10,
        subclip_len=34950, batch_size=2,
    )  # fmt: skip
    seen: list[int] = []
    assert check_data(module, workers=2, progress=seen.append) == []
    assert len(seen) == 5  # every clip read once

    done = run_tagger("check", "data=coursework", f"data.root={tmp_path / 'cw'}",
                      "data.n_subclips=5", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "checked 5 clips (train 2, val 1, test 2): no problem clips\n"
    done = run_tagger("check", "data=coursework", f"data.root={tmp_path / 'nope'}",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"tagger check: error: data.root={tmp_path / 'nope'}: no such")


def test_problem_lines_name_split_and_clip() -> None:
    assert ClipProblem("train", "a.npy", "clip a.npy: a.npy does not exist").line() == (
        "train: clip a.npy: a.npy does not exist"
    )
    shape = "audio has shape [9, 1, 4]; expected [10, 1, 4]"
    assert ClipProblem("val/test", "b", shape).line() == f"val/test: clip b: {shape}"


def test_data_that_refuses_to_load_is_one_line_and_exit_1(tmp_path: Path) -> None:
    coursework = write_coursework(tmp_path / "cw", per_part=1)
    missing = tmp_path / "cw" / "samples" / coursework.val["file_path"].iloc[1]
    missing.unlink()
    done = run_tagger("check", "data=coursework", f"data.root={tmp_path / 'cw'}", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("tagger check: error:")
    assert str(missing) in done.stderr
