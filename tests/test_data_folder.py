"""``tagger prepare folder`` on mixed audio files, and ``data=store`` training on the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from tagger.cli.prepare import prepare
from tagger.data.store import ClipStore
from tagger.errors import ConfigError
from tagger.train import train
from tests.conftest import compose_config, run_tagger
from tests.fixtures_mtat import FOLDER_FILES, write_folder
from tests.test_data_coursework import QUICK


def prepare_folder(root: Path, labels: Path, out: Path, *args: str) -> ClipStore:
    argv = ["folder", "--root", str(root), "--labels", str(labels), "--out", str(out)]
    prepare([*argv, "--sample-rate", "8000", "--clip-seconds", "1.2", "--workers", "1", *args])
    return ClipStore(out)


def test_mixed_files_become_one_store_that_trains(tmp_path: Path) -> None:
    labels = write_folder(tmp_path / "audio")
    store = prepare_folder(tmp_path / "audio", labels, tmp_path / "store")

    assert store.sample_rate == 8000 and store.clip_samples == 9600
    assert store.tag_names == ["bass", "beat", "treble"]
    assert store.source_paths == [path for path, *_ in FOLDER_FILES]
    assert list(store.splits) == [split for *_, split in FOLDER_FILES]
    for row, (path, rate, seconds, _, tags, _) in enumerate(FOLDER_FILES):
        assert store.labels[row].tolist() == [int(t in tags.split(";")) for t in store.tag_names]
        direct, _ = soundfile.read(tmp_path / "audio" / path, always_2d=True)
        direct = soxr.resample(direct.mean(axis=1), rate, 8000)[:9600]
        stored = store.memmap()[row, : len(direct)] / 32768
        assert np.corrcoef(stored, direct)[0, 1] > 0.99, path  # stereo mixed down, resampled
        if seconds < 1.2:
            assert not store.memmap()[row, len(direct) + 5 :].any()  # padded with zeros

    cfg = compose_config(
        "train",
        tmp_path / "run",
        ["data=store", f"data.path={tmp_path / 'store'}", "data.n_subclips=2", *QUICK],
    )
    summary = train(cfg)
    assert (summary["train_clips"], summary["val_clips"], summary["test_clips"]) == (5, 2, 2)
    assert summary["tag_names"] == ["bass", "beat", "treble"]
    assert summary["config"]["data"]["subclip_len"] == 4800  # the whole clip in 2 windows
    assert summary["config"]["data"]["sample_rate"] == 8000
    assert summary["dataset"]["source"] == "folder"
    assert "test" in summary


def test_without_a_split_column_the_split_is_seeded(tmp_path: Path) -> None:
    labels = write_folder(tmp_path / "audio", with_split=False)
    first = prepare_folder(tmp_path / "audio", labels, tmp_path / "a", "--val-fraction", "0.2")
    second = prepare_folder(tmp_path / "audio", labels, tmp_path / "b", "--val-fraction", "0.2")
    assert list(first.splits) == list(second.splits)
    assert sorted(first.splits).count("val") == 2 and sorted(first.splits).count("test") == 1
    assert first.meta["split_rule"] == "seeded: val 0.2, test 0.1, seed 0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty; expected a header `path,tags[,split]`"),
        ("path,tags\n", "a header but no rows; expected one row per file"),
        ("file,labels\na/one.wav,bass\n", "no path or tags column"),
        ("path,tags,split\na/one.wav,bass,dev\n", "line 2: split 'dev' is not train, val or test"),
        ("path,tags\na/one.txt,bass\n", "line 2: path 'a/one.txt' is not a .wav/.flac/.ogg/.mp3"),
        (  # tags separated by commas: the extra field is not dropped silently
            "path,tags\na/one.wav,bass\nb/three.mp3,rock,pop\n",
            "line 3: 3 field(s) under a header of 2 (path,tags); separate tags with `;`",
        ),
        ("path,tags,split\na/one.wav,bass\n", "line 2: 2 field(s) under a header of 3"),
        ('path,tags\n"a/one.wav","bass\nbeat"\nx.wav\n', "line 4: 1 field(s) under a header"),
    ],
)
def test_bad_labels_csv_is_named(tmp_path: Path, content: str, message: str) -> None:
    write_folder(tmp_path / "audio")
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    with pytest.raises(ConfigError) as error:
        prepare_folder(tmp_path / "audio", labels, tmp_path / "store")
    assert str(error.value).startswith(f"--labels {labels}") and message in str(error.value)


def test_an_unreadable_file_is_skipped_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    labels = write_folder(tmp_path / "audio")
    (tmp_path / "audio" / "nine.ogg").write_bytes(b"OggS not really an ogg file")
    store = prepare_folder(tmp_path / "audio", labels, tmp_path / "store")
    assert "nine.ogg" not in store.source_paths and len(store.source_paths) == 8
    assert store.meta["skipped"] == [
        {
            "path": "nine.ogg",
            "clip_id": "nine.ogg",
            "reason": "unreadable: libsndfile cannot decode it as audio",
        }
    ]
    assert "skipped nine.ogg: unreadable: libsndfile cannot decode it as audio" in (
        capsys.readouterr().out
    )


def test_missing_root_is_named(tmp_path: Path) -> None:
    labels = write_folder(tmp_path / "audio")
    with pytest.raises(ConfigError, match=r"--root .*nowhere: no such directory"):
        prepare_folder(tmp_path / "nowhere", labels, tmp_path / "store")


def test_rows_outside_the_root_are_refused_one_line_each(tmp_path: Path) -> None:
    labels = write_folder(tmp_path / "audio")
    secret = tmp_path / "secret"
    secret.mkdir()
    soundfile.write(secret / "a.wav", np.zeros(800, np.float32), 8000)
    (tmp_path / "audio" / "link.wav").symlink_to(secret / "a.wav")
    (tmp_path / "audio" / "linked").symlink_to(secret)
    with open(labels, "a") as f:
        f.write("../secret/a.wav,bass,train\n")  # line 11
        f.write(f"{secret / 'a.wav'},bass,train\n")  # 12: absolute
        f.write("link.wav,bass,train\n")  # 13: a symlink out of the root
        f.write("linked/a.wav,bass,train\n")  # 14: through a symlinked folder
        f.write("a/../eight.wav,bass,train\n")  # 15: stays inside, but eight.wav is on line 9
    with pytest.raises(ConfigError) as error:
        prepare_folder(tmp_path / "audio", labels, tmp_path / "store")
    lines, target = str(error.value).splitlines(), (secret / "a.wav").resolve()
    assert lines == [
        f"--labels {labels} line 11: path '../secret/a.wav' leads outside --root "
        f"{tmp_path / 'audio'} (to {target}); list only files under the root",
        f"--labels {labels} line 12: path '{secret / 'a.wav'}' is absolute; give it relative "
        "to --root",
        f"--labels {labels} line 13: path 'link.wav' leads outside --root {tmp_path / 'audio'} "
        f"(to {target}); list only files under the root",
        f"--labels {labels} line 14: path 'linked/a.wav' leads outside --root "
        f"{tmp_path / 'audio'} (to {target}); list only files under the root",
        f"--labels {labels} lines 9 and 15: both list eight.wav; list each file once",
    ]
    assert not (tmp_path / "store").exists()


def test_prepare_prints_one_line_per_refused_row(tmp_path: Path) -> None:
    labels = write_folder(tmp_path / "audio")
    with open(labels, "a") as f:
        f.write("../x.wav,bass,train\na/one.wav,beat,val\n")  # lines 11 and 12
    args = ["folder", "--root", str(tmp_path / "audio"), "--labels", str(labels)]
    done = run_tagger("prepare", *args, "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"tagger: error: --labels {labels} line 11: path '../x.wav' leads outside --root "
        f"{tmp_path / 'audio'} (to {(tmp_path / 'x.wav').resolve()}); list only files under "
        "the root",
        f"tagger: error: --labels {labels} lines 2 and 12: both list a/one.wav; list each file "
        "once",
    ]
