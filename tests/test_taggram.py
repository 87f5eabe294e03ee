"""``tagger predict --taggram DIR [--hop SECONDS]``: every window's tag probabilities, as a CSV
and a picture, for wav, flac and mp3 files."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from matplotlib.image import imread

from tagger.cli.predict import parse_args
from tagger.figures import plot_taggram
from tagger.module import load_trained
from tagger.predict import taggram_names, windows
from tagger.prepare.audio import decode
from tests.conftest import run_tagger

RATE = 12_000  # the TINY checkpoint's sample rate; its windows are 4,096 samples


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """song.wav (22.05 kHz stereo, 2 s), song.flac (12 kHz, 1.5 s) and song.mp3 (16 kHz,
    2 s: a rising tone, then noise), and a second song.wav in another folder."""
    folder = tmp_path_factory.mktemp("music")
    rng = np.random.default_rng(0)
    t = np.arange(44_100) / 22_050
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(folder / "song.wav", np.stack([tone, 0.5 * tone], axis=1), 22_050)
    soundfile.write(folder / "song.flac", 0.2 * rng.standard_normal(18_000), RATE)
    t16 = np.arange(32_000) / 16_000
    rising = np.where(t16 < 1, 0.4 * np.sin(2 * np.pi * (200 + 800 * t16) * t16),
                      0.2 * rng.standard_normal(len(t16)))  # fmt: skip
    soundfile.write(folder / "song.mp3", rising, 16_000)
    (folder / "other").mkdir()
    soundfile.write(folder / "other" / "song.wav", 0.3 * np.sign(tone), 22_050)
    return folder


def tagger_predict(*args: str | Path) -> subprocess.CompletedProcess:
    return run_tagger("predict", *args)


def read_taggram(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A taggram CSV: its header, window starts [n] (s) and probabilities [n, K]."""
    with path.open() as f:
        header, *rows = list(csv.reader(f))
    values = np.array(rows, dtype=float)
    return header, values[:, 0], values[:, 1:]


def window_probabilities(checkpoint: Path, file: Path, hop: int) -> np.ndarray:
    """Each window's probabilities [n, K], computed here: the decoded file cut by hand into
    windows ``hop`` samples apart, each one tagged as a clip of one window."""
    model, config = load_trained(checkpoint)
    window = config["data"]["subclip_len"]
    samples = decode(file, config["data"]["sample_rate"])
    starts = range(0, max(1, len(samples) - window + 1), hop)
    rows = []
    for start in starts:
        piece = np.zeros(window, np.float32)
        chunk = samples[start : start + window]
        piece[: len(chunk)] = chunk  # only a file shorter than one window is padded
        clip = torch.from_numpy(piece).view(1, 1, 1, window) * 32768.0
        rows.append(model.predict_clips(clip)[0].detach().numpy())
    return np.array(rows)


def test_windows_start_a_hop_apart_and_default_to_consecutive_ones() -> None:
    samples = np.arange(11, dtype=np.float32)
    assert windows(samples, 4, 3)[:, 0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows(samples, 4).tolist() == windows(samples, 4, 4).tolist()
    assert windows(samples, 4)[:, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(samples[:2], 4, 1)[:, 0].tolist() == [[0, 1, 0, 0]]  # padded to one window


def test_same_named_files_get_the_folders_that_tell_them_apart(tmp_path: Path) -> None:
    files = [
        tmp_path / "rock" / "song.mp3",
        tmp_path / "jazz" / "song.mp3",
        tmp_path / "a" / "x" / "b.wav",
        tmp_path / "c" / "x" / "b.wav",
        tmp_path / "solo.flac",
        tmp_path / "rock" / ".." / "rock" / "song.mp3",  # the first file again
    ]
    assert list(taggram_names(files).values()) == [
        "rock/song.mp3",
        "jazz/song.mp3",
        "a/x/b.wav",
        "c/x/b.wav",
        "solo.flac",
        "rock/song.mp3",
    ]


def test_the_picture_puts_the_files_top_tags_first(tmp_path: Path) -> None:
    tags = ["bass", "beat", "chord", "noise", "sweep"]
    clip = np.array([0.1, 0.9, 0.3, 0.8, 0.2])
    probabilities = np.random.default_rng(0).random((7, 5))
    order = plot_taggram(np.arange(7) * 0.5, 0.5, probabilities, tags, clip,
                         tmp_path / "t.png", top_k=2)  # fmt: skip
    assert order == ["beat", "noise", "chord", "sweep", "bass"]
    height, width, _ = imread(tmp_path / "t.png").shape
    assert width > 600 and height > 150


def test_taggrams_hold_every_windows_probabilities(checkpoint: Path, music: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """wav, flac and mp3 with overlapping windows (0.1 s = 1,200 samples apart); the clip
    scores printed are those of a run without taggrams."""
    tag_names = load_trained(checkpoint)[0].tag_names
    files = [music / "song.wav", music / "song.flac", music / "song.mp3"]
    out = tmp_path / "taggrams"
    result = tagger_predict(checkpoint, *files, "--format", "csv", "--taggram", out,
                            "--hop", "0.1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == tagger_predict(checkpoint, *files, "--format", "csv").stdout
    assert f"taggrams of 3 files in {out}" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"song.{kind}.taggram.{ext}" for kind in ("wav", "flac", "mp3") for ext in ("csv", "png")
    )
    for file in files:
        header, starts, probabilities = read_taggram(out / f"{file.name}.taggram.csv")
        expected = window_probabilities(checkpoint, file, hop=1_200)
        assert header == ["start_s", *tag_names]
        assert len(expected) == {"song.wav": 17, "song.flac": 12, "song.mp3": 17}[file.name]
        np.testing.assert_allclose(starts, np.arange(len(expected)) * 0.1, atol=1e-6)
        np.testing.assert_allclose(probabilities, expected, atol=2e-6)
        if file.suffix == ".mp3":  # a tone, then noise: the windows differ
            assert np.abs(probabilities[0] - probabilities[-1]).max() > 1e-3
        height, width, _ = imread(out / f"{file.name}.taggram.png").shape
        assert width > 600 and height > 150


def test_same_named_files_do_not_overwrite_and_the_default_hop_is_a_window(
    checkpoint: Path, music: Path, tmp_path: Path
) -> None:
    out = tmp_path / "taggrams"
    result = tagger_predict(checkpoint, music / "song.wav", music / "other" / "song.wav",
                            "--taggram", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = music.name, "other"
    for folder, file in ((first, music / "song.wav"), (second, music / "other" / "song.wav")):
        _, starts, probabilities = read_taggram(out / folder / "song.wav.taggram.csv")
        expected = window_probabilities(checkpoint, file, hop=4_096)
        assert len(expected) == 5  # 2 s at 12 kHz: 24,000 samples, 5 windows of 4,096
        np.testing.assert_allclose(starts, np.arange(5) * 4_096 / RATE, atol=1e-6)
        np.testing.assert_allclose(probabilities, expected, atol=2e-6)
        assert (out / folder / "song.wav.taggram.png").is_file()
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hop", "0.1"], "--hop sets the taggram's windows: give --taggram DIR too"),
        (["--taggram", "t", "--hop", "-1"], "--hop: must be a positive number of seconds"),
        (["--taggram", "t", "--hop", "inf"], "--hop: must be a positive number of seconds"),
    ],
)
def test_a_hop_without_taggram_or_not_a_positive_number_is_refused(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["any.ckpt", "any.wav", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_taggram_folder_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taggrams").write_text("a file")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["any.ckpt", "any.wav", "--taggram", str(tmp_path / "taggrams")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"--taggram {tmp_path / 'taggrams'} is a file; give a folder (made if missing)"
    )


def test_a_hop_longer_than_a_window_is_refused(checkpoint: Path, music: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    result = tagger_predict(checkpoint, music / "song.wav", "--taggram", tmp_path, "--hop", "1")
    assert result.returncode == 2 and not result.stdout
    assert "--hop 1.0 is 12000 samples at the model's 12000 Hz; give 1/12000 s to 0.341333 s" \
        in result.stderr  # fmt: skip
