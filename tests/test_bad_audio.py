"""Bad audio is never silent: NaN samples are refused, truncated files are reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tagger.cli import predict as predict_cli
from tagger.cli.prepare import prepare
from tagger.data.store import ClipStore
from tagger.predict import Prediction, Tagger
from tagger.prepare.audio import AudioError, read_audio
from tests.fixtures_mtat import tones, write_folder


def nan_wav(path: Path) -> Path:
    """A float wav of a tone with 3 NaN samples and one infinite one."""
    samples = tones(np.random.default_rng(1), 8000, 8000)
    samples[[10, 200, 3000]] = np.nan
    samples[4000] = np.inf
    soundfile.write(path, samples, 8000, subtype="FLOAT")
    return path


def truncated_mp3(path: Path, seconds: float = 2.0) -> Path:
    """An mp3 (written by libsndfile, with a frame-count header) cut to half its bytes."""
    soundfile.write(path, tones(np.random.default_rng(2), int(16000 * seconds), 16000), 16000,
                    format="MP3")  # fmt: skip
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_nan_samples_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as error:
        read_audio(nan_wav(tmp_path / "nan.wav"), 8000)
    assert error.value.reason == "non-finite: 4 NaN or infinite sample(s)"


def test_a_truncated_file_is_noted_and_a_whole_one_is_not(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp3"
    soundfile.write(whole, tones(np.random.default_rng(2), 32000, 16000), 16000, format="MP3")
    samples, note = read_audio(whole, 16000)
    assert note is None and len(samples) == 32000

    samples, note = read_audio(truncated_mp3(tmp_path / "cut.mp3"), 16000)
    assert len(samples) < 20000
    decoded = len(samples) / 16000
    assert note == f"truncated: decodes to {decoded:.2f} s of the 2.00 s its header gives"

    wav = tmp_path / "cut.wav"
    soundfile.write(wav, np.zeros(8000, np.int16), 8000)  # 16,000 data bytes
    wav.write_bytes(wav.read_bytes()[:-6000])
    samples, note = read_audio(wav, 8000)
    assert len(samples) == 5000
    assert note == "truncated: the file holds 10000 of the 16000 data bytes its header gives"


@pytest.mark.parametrize("truncated", ["keep", "skip"])
def test_prepare_skips_nan_files_and_lists_truncated_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture, truncated: str
) -> None:
    labels = write_folder(tmp_path / "audio")
    nan_wav(tmp_path / "audio" / "eight.wav")
    truncated_mp3(tmp_path / "audio" / "b" / "three.mp3")
    argv = ["folder", "--root", str(tmp_path / "audio"), "--labels", str(labels), "--out",
            str(tmp_path / "store"), "--sample-rate", "8000", "--clip-seconds", "1.2",
            "--workers", "1", "--truncated", truncated]  # fmt: skip
    prepare(argv)
    store, out = ClipStore(tmp_path / "store"), capsys.readouterr().out
    skipped = {skip["path"]: skip["reason"] for skip in store.meta["skipped"]}
    assert skipped["eight.wav"] == "non-finite: 4 NaN or infinite sample(s)"
    assert "skipped eight.wav: non-finite: 4 NaN or infinite sample(s)" in out
    assert "eight.wav" not in store.source_paths
    assert store.meta["truncated_files"] == truncated
    note = "truncated: decodes to"
    if truncated == "keep":
        assert len(store.source_paths) == 8 and "b/three.mp3" in store.source_paths
        assert [t["path"] for t in store.meta["truncated"]] == ["b/three.mp3"]
        assert store.meta["truncated"][0]["reason"].startswith(note)
        assert f"kept b/three.mp3, zero-padded: {note}" in out
    else:
        assert len(store.source_paths) == 7 and "b/three.mp3" not in store.source_paths
        assert skipped["b/three.mp3"].startswith(note) and store.meta["truncated"] == []
        assert f"skipped b/three.mp3: {note}" in out


class FakeTagger:
    """A tagger whose model gives NaN for files named ``nan*`` (a diverged checkpoint)."""

    tag_names = ("a", "b")

    def tag(self, path: Path, hop: int | None = None) -> Prediction:
        read_audio(path, 8000)  # refuses NaN samples, as the real one does
        probabilities = np.array([np.nan if path.name.startswith("nan") else 0.25, 0.75])
        return Prediction(path, 1, probabilities)


def test_predict_never_prints_nan_and_its_json_is_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    good, nan_output = tmp_path / "good.wav", tmp_path / "nan_output.wav"
    for path in (good, nan_output):
        soundfile.write(path, tones(np.random.default_rng(3), 8000, 8000), 8000)
    nan_samples = nan_wav(tmp_path / "samples.wav")
    monkeypatch.setattr(Tagger, "from_checkpoint", lambda *args: FakeTagger())
    for output in ("json", "csv", "table"):
        argv = ["tagger predict", "x.ckpt", str(good), str(nan_output), str(nan_samples)]
        monkeypatch.setattr(sys, "argv", [*argv, "--format", output])
        with pytest.raises(SystemExit) as done:
            predict_cli.main()
        out, err = capsys.readouterr()
        assert done.value.code == 1
        assert f"skipped {nan_samples}: non-finite: 4 NaN or infinite sample(s)" in err
        assert f"skipped {nan_output}: the model gives NaN or infinite probabilities" in err
        if output == "json":
            document = json.loads(out, parse_constant=_refuse)  # strict: no NaN, no Infinity
            assert [entry["file"] for entry in document["files"]] == [str(good)]
            assert document["files"][0]["probabilities"] == {"a": 0.25, "b": 0.75}
            skipped = [entry["file"] for entry in document["skipped"]]
            assert skipped == [str(nan_output), str(nan_samples)]
        elif output == "csv":
            assert out.splitlines() == ["file,a,b", f"{good},0.250000,0.750000"]
        else:
            assert out.splitlines() == [str(good), "  tags: b 0.750", "  b  0.750", "  a  0.250"]
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        predict_cli.render_json([FakeTagger().tag(nan_output)], list(FakeTagger.tag_names), 2, [])


def _refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")
