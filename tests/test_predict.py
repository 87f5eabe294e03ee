"""``tagger predict``: wav, flac and mp3 files written here, a corrupt one, and a folder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tagger.module import load_trained
from tagger.predict import Tagger, audio_files, windows
from tagger.prepare.audio import decode
from tests.conftest import run_tagger


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a wav (22.05 kHz stereo), a flac, an mp3 (nested) and a corrupt .ogg."""
    folder = tmp_path_factory.mktemp("music")
    (folder / "nested").mkdir()
    t = np.arange(44_100) / 22_050
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(folder / "a.wav", np.stack([tone, tone], axis=1), 22_050)
    soundfile.write(folder / "b.flac", tone[:5_000], 22_050)  # shorter than one window
    soundfile.write(folder / "nested" / "c.mp3", tone, 22_050)
    (folder / "broken.ogg").write_bytes(b"not audio at all" * 64)
    (folder / "notes.txt").write_text("not an audio file, not picked up")
    return folder


def tagger_predict(*args: str | Path) -> subprocess.CompletedProcess:
    return run_tagger("predict", *args)


def test_windows_cover_the_file_and_pad_a_short_one() -> None:
    assert windows(np.ones(10, np.float32), 4).shape == (2, 1, 4)  # remainder dropped
    short = windows(np.ones(3, np.float32), 4)
    assert short.shape == (1, 1, 4) and short[0, 0].tolist() == [1, 1, 1, 0]


def test_folders_give_their_audio_files_recursively(music: Path) -> None:
    files, left_out = audio_files([music])
    names = [p.relative_to(music).as_posix() for p in files]
    assert names == ["a.wav", "b.flac", "broken.ogg", "nested/c.mp3"]
    assert [(p.relative_to(music).as_posix(), why[:8]) for p, why in left_out] == [
        ("notes.txt", "not .wav")
    ]


def test_a_folder_is_expanded_or_refused_never_dropped(
    checkpoint: Path, music: Path, tmp_path: Path
) -> None:
    result = tagger_predict(checkpoint, music, "--format", "csv")
    assert f"tagger predict: left out {music / 'notes.txt'}: not .wav" in result.stderr
    empty = tmp_path / "covers"
    empty.mkdir()
    (empty / "front.jpg").write_bytes(b"not audio")
    result = tagger_predict(checkpoint, music / "a.wav", empty)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.strip() == (
        f"tagger predict: error: {empty} is a folder with no .wav, .flac, .ogg, .mp3, .aiff, "
        ".aif file (searched recursively); give audio files or folders that hold some"
    )


def test_tagging_matches_the_checkpoint_on_the_files_windows(checkpoint: Path, music: Path) -> None:
    tagger = Tagger.from_checkpoint(checkpoint)
    prediction = tagger.tag(music / "nested" / "c.mp3")
    model, config = load_trained(checkpoint)
    window, rate = config["data"]["subclip_len"], config["data"]["sample_rate"]
    samples = decode(music / "nested" / "c.mp3", rate)
    n = len(samples) // window
    audio = torch.from_numpy(samples[: n * window]).view(1, n, 1, window) * 32768.0
    expected = model.predict_clips(audio)[0].detach().numpy()
    assert prediction.windows == n == 5  # 2 s at 12 kHz: 24,000 samples, 5 windows of 4,096
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-6)


def test_table_shows_top_tags_and_reports_the_corrupt_file(checkpoint: Path, music: Path) -> None:
    result = tagger_predict(checkpoint, music, "--top-k", "3")
    assert result.returncode == 1, result.stderr  # some file skipped
    assert "broken.ogg" in result.stderr and "skipped" in result.stderr
    blocks = result.stdout.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [
        str(music / "a.wav"),
        str(music / "b.flac"),
        str(music / "nested" / "c.mp3"),
    ]
    for block in blocks:
        decided, *top = block.splitlines()[1:]
        assert decided.startswith("  tags: ")  # tests/test_decisions.py checks them
        probabilities = [float(line.split()[-1]) for line in top]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)


def test_json_has_every_tag_and_csv_one_row_per_file(checkpoint: Path, music: Path) -> None:
    tag_names = load_trained(checkpoint)[0].tag_names
    result = tagger_predict(checkpoint, music / "a.wav", music / "broken.ogg",
                            music / "nested" / "c.mp3", "--format", "json")  # fmt: skip
    document = json.loads(result.stdout)
    assert [Path(f["file"]).name for f in document["files"]] == ["a.wav", "c.mp3"]
    for entry in document["files"]:
        assert list(entry["probabilities"]) == tag_names
        assert all(0 <= p <= 1 for p in entry["probabilities"].values())
        assert len(entry["top"]) == min(10, len(tag_names))
    assert [Path(s["file"]).name for s in document["skipped"]] == ["broken.ogg"]

    rows = tagger_predict(checkpoint, music / "b.flac", "--format", "csv").stdout.splitlines()
    assert result.returncode == 1 and rows[0].split(",") == ["file", *tag_names]
    assert len(rows) == 2 and rows[1].startswith(str(music / "b.flac"))


def test_a_missing_checkpoint_is_a_usage_error(music: Path, tmp_path: Path) -> None:
    result = tagger_predict(tmp_path / "nope.ckpt", music)
    assert result.returncode == 2 and "nope.ckpt does not exist" in result.stderr


def test_nan_samples_are_skipped_and_json_stays_strict(
    checkpoint: Path, music: Path, tmp_path: Path
) -> None:
    from tests.test_bad_audio import nan_wav, truncated_mp3

    nan_file, cut = nan_wav(tmp_path / "nan.wav"), truncated_mp3(tmp_path / "cut.mp3")
    result = tagger_predict(checkpoint, nan_file, music / "a.wav", cut, "--format", "json")
    assert result.returncode == 1
    document = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert [Path(f["file"]).name for f in document["files"]] == ["a.wav", "cut.mp3"]
    assert document["skipped"] == [
        {"file": str(nan_file), "reason": "non-finite: 4 NaN or infinite sample(s)"}
    ]
    assert f"skipped {nan_file}: non-finite" in result.stderr
    assert f"warning: {cut}: truncated: decodes to" in result.stderr
