"""``tagger prepare mtat``: the raw release (mp3 + annotations_final.csv) -> a clip store."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from scipy.signal import resample_poly

from tagger.cli.prepare import prepare
from tagger.data.store import ClipStore
from tagger.data.tagsets import MERGED50, MTAT_COLUMNS, TOP50
from tagger.errors import ConfigError
from tagger.prepare.audio import TRUNCATION_TOLERANCE, _truncation, allowed_shortfall, read_audio
from tests.conftest import run_cli
from tests.fixtures_mtat import (
    CORRUPT_MP3,
    EMPTY_MP3,
    MISSING_MP3,
    RawMtat,
    mp3_with_slack,
    write_raw_mtat,
)

#: merged50's synonym groups exactly as mtat.md writes them (first name is the merged tag).
SPEC_SYNONYMS = """beat/beats; chant/chanting; choir/choral; classical/clasical/classic;
drum/drums; electro/electronic/electronica/electric; fast/fast beat/quick;
female/female singer/female singing/female vocals/female voice/woman/woman singing/women;
flute/flutes; guitar/guitars; hard/hard rock; harpsichord/harpsicord;
heavy/heavy metal/metal; horn/horns; india/indian; jazz/jazzy;
male/male singer/male vocal/male vocals/male voice/man/man singing/men; no beat/no drums;
no singer/no singing/no vocal/no vocals/no voice/no voices/instrumental; opera/operatic;
orchestra/orchestral; quiet/silence; singer/singing; space/spacey; string/strings;
synth/synthesizer; violin/violins; vocal/vocals/voice/voices; strange/weird"""


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> RawMtat:
    return write_raw_mtat(tmp_path_factory.mktemp("mtat"))


def prepare_mtat(raw: RawMtat, out: Path, *args: str) -> ClipStore:
    prepare(["mtat", "--root", str(raw.root), "--out", str(out), "--workers", "1", *args])
    return ClipStore(out)


def expected_labels(csv: pd.DataFrame, tag_set: str) -> np.ndarray:
    """The tag set's labels computed from the CSV with pandas and the spec's synonym text."""
    if tag_set == "top50":
        return csv[list(TOP50)].to_numpy()
    groups = {g.split("/")[0]: g.split("/") for g in SPEC_SYNONYMS.replace("\n", " ").split("; ")}
    return np.stack([csv[groups.get(tag, [tag])].max(axis=1) for tag in MERGED50], axis=1)


@pytest.mark.parametrize("tag_set", ["top50", "merged50"])
def test_labels_match_the_csv(raw: RawMtat, tmp_path: Path, tag_set: str) -> None:
    store = prepare_mtat(raw, tmp_path / "store", "--tags", tag_set)
    csv = pd.read_csv(raw.root / "annotations_final.csv", sep="\t").set_index("mp3_path")
    assert list(csv.columns[1:]) == list(MTAT_COLUMNS)
    assert store.tag_names == list(TOP50 if tag_set == "top50" else MERGED50)
    expected = expected_labels(csv.loc[store.source_paths], tag_set)
    np.testing.assert_array_equal(store.labels, expected)
    assert store.clip_ids == [str(i) for i in csv.loc[store.source_paths, "clip_id"]]


def test_audio_matches_a_direct_decode(raw: RawMtat, tmp_path: Path) -> None:
    store = prepare_mtat(raw, tmp_path / "store", "--sample-rate", "12000")
    assert store.sample_rate == 12000 and store.clip_samples == 349_500  # 29.125 s
    audio = store.memmap()
    for row, path in enumerate(store.source_paths):
        direct, rate = soundfile.read(raw.root / path, dtype="float64")
        assert rate == 16000
        direct = resample_poly(direct, 3, 4)  # 16 -> 12 kHz, another resampler than soxr
        n = len(direct) - 50
        stored = audio[row, :n] / 32768
        assert np.corrcoef(stored, direct[:n])[0, 1] > 0.99, path
        assert not audio[row, len(direct) + 10 :].any()  # zero padding to 29.125 s


def test_splits_follow_the_parts_and_the_report_lists_the_bad_clips(
    raw: RawMtat, tmp_path: Path
) -> None:
    dieleman = prepare_mtat(raw, tmp_path / "dieleman", "--split", "dieleman")
    parts = np.array([path[0] for path in dieleman.source_paths])
    assert set(parts[dieleman.splits == "train"]) == {"0", "5", "b"}
    assert set(parts[dieleman.splits == "val"]) == {"c"}
    assert set(parts[dieleman.splits == "test"]) == {"d", "f"}
    good = [path for path in raw.paths if path not in raw.bad]
    assert dieleman.source_paths == good  # every good clip kept, the untagged one too

    meta = dieleman.meta
    reasons = {skip["path"]: skip["reason"] for skip in meta["skipped"]}
    assert set(reasons) == {EMPTY_MP3, CORRUPT_MP3, MISSING_MP3}
    assert reasons[EMPTY_MP3].startswith("empty")
    assert reasons[CORRUPT_MP3].startswith("unreadable")
    assert reasons[MISSING_MP3].startswith("missing")
    assert meta["counts"] == {"train": 6, "val": 2, "test": 4}
    assert meta["split_rule"] == "dieleman" and meta["tag_set"] == "top50"
    assert meta["sample_rate"] == 16000 and meta["format_version"] == 1

    coursework = prepare_mtat(raw, tmp_path / "cw", "--split", "coursework", "--tags", "merged50")
    parts = np.array([path[0] for path in coursework.source_paths])
    assert set(parts[coursework.splits == "train"]) == {"0", "5", "b", "c"}
    assert set(parts[coursework.splits == "test"]) == {"d", "f"}
    assert "val" not in set(coursework.splits)
    assert coursework.labels.any(axis=1).all()  # the coursework keeps tagged clips only
    dropped = len(good) - len(coursework.source_paths)
    assert dropped >= 1 and coursework.meta["dropped"]["no_tag_in_set"] == dropped
    assert raw.paths[0] not in coursework.source_paths  # the fixture's untagged clip


def test_clean_split_files(raw: RawMtat, tmp_path: Path) -> None:
    good = [path for path in raw.paths if path not in raw.bad]
    lists = {"train": good[:5], "valid": good[5:7], "test": good[7:]}
    for name, paths in lists.items():  # the published format: "<index>\t<part>/<file>.mp3"
        np.save(tmp_path / f"{name}.npy", np.array([f"{i}\t{p}" for i, p in enumerate(paths)]))
    store = prepare_mtat(raw, tmp_path / "store", "--split", f"clean:{tmp_path}")
    csv = pd.read_csv(raw.root / "annotations_final.csv", sep="\t").set_index("mp3_path")
    tagged = set(csv.index[csv[list(TOP50)].any(axis=1)])
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        stored = [p for p, s in zip(store.source_paths, store.splits, strict=True) if s == split]
        assert stored == [path for path in lists[name] if path in tagged]
    untagged = [path for path in good if path not in tagged]
    assert store.meta["dropped"] == {"no_tag_in_set": len(untagged), "in_no_split": 3}


def test_a_tag_set_file_merges_synonyms(raw: RawMtat, tmp_path: Path) -> None:
    tags = tmp_path / "tags.txt"
    tags.write_text("# two tags\nguitar\nclassical/clasical/classic\n")
    store = prepare_mtat(raw, tmp_path / "store", "--tags", str(tags))
    csv = pd.read_csv(raw.root / "annotations_final.csv", sep="\t").set_index("mp3_path")
    rows = csv.loc[store.source_paths]
    assert store.tag_names == ["guitar", "classical"]
    np.testing.assert_array_equal(store.labels[:, 0], rows["guitar"])
    classical = rows[["classical", "clasical", "classic"]].max(axis=1)
    np.testing.assert_array_equal(store.labels[:, 1], classical)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("tags", ["--tags", "{tmp}/tags.txt"], "tag 'gutiar' is not one of the 188 columns"),
        ("nothing", ["--root", "{tmp}/nowhere"], "--root {tmp}/nowhere: no such directory"),
        ("header", [], "annotations_final.csv: expected a tab-separated header"),
        ("nothing", ["--split", "parts"], "--split 'parts': expected dieleman, coursework"),
    ],
)
def test_bad_input_is_named(
    raw: RawMtat, tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    root = raw.root
    if setup == "tags":
        (tmp_path / "tags.txt").write_text("guitar\ngutiar\n")
    if setup == "header":  # a comma-separated copy of the CSV
        root = tmp_path / "commas"
        root.mkdir()
        csv = pd.read_csv(raw.root / "annotations_final.csv", sep="\t")
        csv.to_csv(root / "annotations_final.csv", index=False)
    argv = ["mtat", "--root", str(root), "--out", str(tmp_path / "store"), "--workers", "1"]
    with pytest.raises(ConfigError) as error:
        prepare(argv + [arg.format(tmp=tmp_path) for arg in args])
    assert message.format(tmp=tmp_path) in str(error.value)
    assert not (tmp_path / "store").exists()


@pytest.mark.slow  # the command in a real interpreter, with two decoding processes
def test_cli_decodes_on_two_cores_and_refuses_to_overwrite(raw: RawMtat, tmp_path: Path) -> None:
    args = ["-m", "tagger.cli.prepare", "mtat", "--root", str(raw.root)]
    args += ["--out", str(tmp_path / "store"), "--workers", "2"]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"skipped {EMPTY_MP3}: empty" in done.stdout
    assert "100%" in done.stderr  # the progress bar
    meta = json.loads((tmp_path / "store" / "meta.json").read_text())
    assert meta["clips"] == len(raw.paths) - 3

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 2
    assert "is already a finished clip store; delete it or choose another --out" in again.stderr
    assert json.loads((tmp_path / "store" / "meta.json").read_text()) == meta


def write_pons_split(raw: RawMtat, directory: Path, lists: dict[str, list[int]]) -> list[str]:
    """Pons et al.'s split files for the clips at ``lists[file]`` (rows of ``raw``):
    ``output_labels_mtt.txt`` (the top50 tags as a list on its second line, in the fixture's
    own order) and ``<file>_gt_mtt.tsv``, ``<clip_id>\\t[<50 floats>]`` a line, the vector
    in that order. Returns the label order written."""
    order = sorted(TOP50)  # not the store's column order, so the test must map the columns
    directory.mkdir()
    (directory / "output_labels_mtt.txt").write_text(f"# labels\nlabels = {order!r}\n")
    columns = [MTAT_COLUMNS.index(tag) for tag in order]
    for name, rows in lists.items():
        lines = [f"{raw.clip_ids[row]}\t{[float(x) for x in raw.raw[row, columns]]}\n"
                 for row in rows]  # fmt: skip
        (directory / f"{name}_gt_mtt.tsv").write_text("".join(lines))
    return order


def read_gt(directory: Path, name: str) -> dict[str, list[float]]:
    """A ``*_gt_mtt.tsv`` file read as its users read it: clip id -> tag vector."""
    lines = (directory / f"{name}_gt_mtt.tsv").read_text().splitlines()
    return {line.split("\t")[0]: ast.literal_eval(line.split("\t")[1]) for line in lines}


def test_pons_split_files_assign_clips_by_id(raw: RawMtat, tmp_path: Path) -> None:
    good = [row for row, path in enumerate(raw.paths) if path not in raw.bad]
    lists = {"train": good[:6], "val": good[9:11], "test": [good[6], good[7], good[11]]}
    lists["train"].append(raw.paths.index(MISSING_MP3))  # listed, but its mp3 is missing
    order = write_pons_split(raw, tmp_path / "pons", lists)
    store = prepare_mtat(raw, tmp_path / "store", "--split", f"pons:{tmp_path / 'pons'}")

    for split, name in (("train", "train"), ("val", "val"), ("test", "test")):
        stored = [i for i, s in zip(store.clip_ids, store.splits, strict=True) if s == split]
        expected = [raw.clip_ids[row] for row in lists[name] if raw.paths[row] not in raw.bad]
        assert stored == expected, split
    not_listed = len(raw.paths) - sum(len(rows) for rows in lists.values())
    assert store.meta["dropped"] == {"no_tag_in_set": 0, "in_no_split": not_listed}
    assert raw.clip_ids[good[8]] not in store.clip_ids  # in no file
    assert [s["path"] for s in store.meta["skipped"]] == [MISSING_MP3]
    assert store.meta["split_rule"] == f"pons:{tmp_path / 'pons'}"

    # the labels come from annotations_final.csv and agree with the files' gt vectors
    labels_order = ast.literal_eval((tmp_path / "pons" / "output_labels_mtt.txt")
                                    .read_text().splitlines()[1].partition("= ")[2])  # fmt: skip
    assert labels_order == order
    gt = {**read_gt(tmp_path / "pons", "train"), **read_gt(tmp_path / "pons", "val"),
          **read_gt(tmp_path / "pons", "test")}  # fmt: skip
    columns = [store.tag_names.index(tag) for tag in labels_order]
    for clip_id, labels in zip(store.clip_ids, store.labels, strict=True):
        np.testing.assert_array_equal(labels[columns], gt[clip_id], err_msg=clip_id)
    assert store.labels.any()


@pytest.mark.parametrize(
    ("write", "message"),
    [
        ({}, "expected train_gt_mtt.tsv, val_gt_mtt.tsv, test_gt_mtt.tsv in that directory"),
        ({"val": "c2\t[0.0]\n"}, "val_gt_mtt.tsv line 1: expected `<clip_id>\\t[<50 numbers>]`"),
        ({"val": "2 [0.0]\n"}, "val_gt_mtt.tsv line 1: expected"),
        ({"val": "2\t[1.0]\n"}, "val_gt_mtt.tsv: clip 2 is already in train_gt_mtt.tsv"),
        ({"val": "999\t[1.0]\n"}, "1 listed clip(s) are not in"),
    ],
)
def test_bad_pons_files_are_named(
    raw: RawMtat, tmp_path: Path, write: dict[str, str], message: str
) -> None:
    folder = tmp_path / "pons"
    folder.mkdir()
    if write:
        (folder / "train_gt_mtt.tsv").write_text(f"{raw.clip_ids[0]}\t[0.0, 1.0]\n")
        (folder / "test_gt_mtt.tsv").write_text("")
        (folder / "val_gt_mtt.tsv").write_text(write["val"])
    with pytest.raises(ConfigError) as error:
        prepare_mtat(raw, tmp_path / "store", "--split", f"pons:{folder}")
    assert message in str(error.value)
    assert not (tmp_path / "store").exists()


def test_an_mp3_short_by_its_encoders_slack_is_whole(tmp_path: Path) -> None:
    """MTAT's clips decode about 0.15 s short of their header (29.27 s vs 29.12 s): no
    warning; a decode clearly shorter than the header still is one."""
    whole = mp3_with_slack(tmp_path / "whole.mp3", 29.1, 0.15)
    with soundfile.SoundFile(whole) as sound:
        header = sound.frames
    samples, note = read_audio(whole, 16000)
    assert note is None
    assert header - len(samples) > TRUNCATION_TOLERANCE  # what the old check called truncated

    rate, header = 16000, round(29.27 * 16000)  # the real clip's figures
    assert _truncation(header, round(29.12 * rate), rate, "", mp3=True) is None
    assert _truncation(header, round(29.12 * rate), rate, "", mp3=False) is not None
    short = _truncation(header, round(28.5 * rate), rate, "", mp3=True)
    assert short == "truncated: decodes to 28.50 s of the 29.27 s its header gives"
    for rate in (8000, 16000, 22050, 44100, 48000):  # LAME's delay and a frame of padding
        frame = 1152 if rate >= 32000 else 576
        assert allowed_shortfall(rate, rate, mp3=True) >= 1105 + frame
        assert allowed_shortfall(600 * rate, rate, mp3=True) == round(6 * rate)  # 1 %


def test_prepare_mtat_lists_no_whole_clip_as_truncated(tmp_path: Path) -> None:
    raw = write_raw_mtat(tmp_path / "mtat", parts="0d", clips_per_part=1)
    mp3_with_slack(raw.root / raw.paths[1], 29.1, 0.15)  # a clip of part d, as MTAT has it
    out = tmp_path / "store"
    prepare(["mtat", "--root", str(raw.root), "--out", str(out), "--workers", "1",
             "--truncated", "skip"])  # fmt: skip
    store = ClipStore(out)
    assert store.meta["truncated"] == []
    assert raw.paths[1] in store.source_paths
    assert raw.paths[1] not in [skip["path"] for skip in store.meta["skipped"]]


@pytest.mark.parametrize("bad", ["annotations", "tags", "pons", "clean"])
def test_a_file_that_is_not_utf8_is_named_in_one_line(
    raw: RawMtat, tmp_path: Path, bad: str
) -> None:
    latin1 = "guitar\ncaf\xe9\n".encode("latin-1")
    root, args = raw.root, []
    if bad == "annotations":
        root = tmp_path / "copy"
        root.mkdir()
        (root / "annotations_final.csv").write_bytes(latin1)
        target = root / "annotations_final.csv"
    elif bad == "tags":
        target = tmp_path / "tags.txt"
        args = ["--tags", str(target)]
    else:
        name = {"pons": "train_gt_mtt.tsv", "clean": "train.txt"}[bad]
        for other in ("val_gt_mtt.tsv", "test_gt_mtt.tsv", "valid.txt", "test.txt"):
            (tmp_path / other).write_text("")
        target = tmp_path / name
        args = ["--split", f"{bad}:{tmp_path}"]
    target.write_bytes(latin1)
    argv = ["mtat", "--root", str(root), "--out", str(tmp_path / "store"), "--workers", "1"]
    with pytest.raises(ConfigError) as error:
        prepare(argv + args)
    (line,) = str(error.value).splitlines()
    assert str(target) in line and "not a UTF-8" in line
