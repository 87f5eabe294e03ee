"""``tagger prepare jamendo``: MTG-Jamendo's split files and mp3 tracks -> a clip store."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tagger.cli.hydra_setup import compose_run_config as compose_config
from tagger.cli.prepare import prepare
from tagger.data.store import ClipStore
from tagger.errors import ConfigError
from tagger.evaluate import evaluate
from tagger.metrics import category_means, tag_categories
from tagger.prepare.jamendo import SUBSETS, jamendo_plan, read_split_file, split_file
from tests.conftest import REPO_ROOT, run_cli
from tests.fixtures_jamendo import HEADER, Jamendo, write_jamendo


@pytest.fixture(scope="module")
def jamendo(tmp_path_factory: pytest.TempPathFactory) -> Jamendo:
    return write_jamendo(tmp_path_factory.mktemp("jamendo"))


def read_tsv(path: Path) -> list[tuple[str, str, list[str]]]:
    """(TRACK_ID, PATH, tags) of each row, read with the csv module: tags from field 6 on."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == HEADER.strip().split("\t")
    return [(row[0], row[3], row[5:]) for row in rows[1:]]


def expected_store(jamendo: Jamendo, subset: str, index: int) -> dict[str, list]:
    """What a store of ``subset``, split ``index`` must hold, from the TSV files alone."""
    rows = {
        split: read_tsv(jamendo.splits / f"split-{index}" / f"autotagging_{subset}-{name}.tsv")
        for split, name in (("train", "train"), ("val", "validation"), ("test", "test"))
    }
    tags = sorted({tag for listed in rows.values() for _, _, row_tags in listed
                   for tag in row_tags})  # fmt: skip
    return {"rows": rows, "tags": tags}


def test_split_files_are_read_as_written(jamendo: Jamendo) -> None:
    tracks = read_split_file(jamendo.splits / "split-0" / "autotagging_top50tags-validation.tsv")
    written = jamendo.tracks[0]["val"]
    assert [(t.track_id, t.path, t.tags) for t in tracks] == [
        (t.track_id, t.path, t.tags) for t in written
    ]
    assert any(len(t.tags) > 2 for t in jamendo.tracks[0]["train"])  # several tags a row


def test_plan_follows_the_tsvs(jamendo: Jamendo) -> None:
    plan = jamendo_plan(jamendo.audio, jamendo.splits, 16000, "top50tags", 0, 2.5, 1.0)
    expected = expected_store(jamendo, "top50tags", 0)
    assert plan.tag_names == expected["tags"] and len(plan.tag_names) == 7
    assert plan.clip_samples is None and (plan.max_samples, plan.min_samples) == (40_000, 16_000)
    listed = [(split, *row) for split, rows in expected["rows"].items() for row in rows]
    assert [(c.split, c.clip_id, c.source_path) for c in plan.clips] == [r[:3] for r in listed]
    for clip, (_, _, path, tags) in zip(plan.clips, listed, strict=True):
        assert clip.path == jamendo.audio / path
        assert [plan.tag_names[i] for i in np.flatnonzero(clip.labels)] == sorted(tags)
    assert plan.meta["tag_categories"] == [tag.split("---")[0] for tag in plan.tag_names]
    assert plan.meta["tag_categories"].count("mood/theme") == 2
    assert plan.meta["split_rule"] == "split-0" and plan.meta["subset"] == "top50tags"


def test_prepare_writes_the_splits_tags_and_labels_of_the_tsvs(
    jamendo: Jamendo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store"
    prepare(["jamendo", "--audio", str(jamendo.audio), "--splits", str(jamendo.splits),
             "--out", str(out), "--workers", "1", "--min-seconds", "0.5"])  # fmt: skip
    store = ClipStore(out)
    expected = expected_store(jamendo, "top50tags", 0)
    seconds = {t.track_id: t.seconds for rows in jamendo.tracks[0].values() for t in rows}
    lengths = np.diff(store.track_offsets) / 16000  # whole tracks, each of its own length
    assert lengths == pytest.approx([seconds[i] for i in store.clip_ids], abs=0.06)
    assert store.tag_names == expected["tags"]
    assert store.meta["tag_categories"] == tag_categories(store.tag_names)
    kept = [(split, *row) for split, rows in expected["rows"].items() for row in rows
            if row[1] != jamendo.missing]  # fmt: skip
    assert list(zip(store.splits, store.clip_ids, store.source_paths, strict=True)) == [
        row[:3] for row in kept
    ]
    for labels, (_, _, _, tags) in zip(store.labels, kept, strict=True):
        assert [store.tag_names[i] for i in np.flatnonzero(labels)] == sorted(tags)
    assert [(s["path"], s["reason"][:7]) for s in store.meta["skipped"]] == [
        (jamendo.missing, "missing")
    ]
    assert store.meta["counts"] == {split: sum(r[0] == split for r in kept)
                                    for split in ("train", "val", "test")}  # fmt: skip
    assert store.sample_rate == 16000
    assert f"skipped {jamendo.missing}: missing" in capsys.readouterr().out


def test_split_index_and_subset_choose_the_files(jamendo: Jamendo, tmp_path: Path) -> None:
    plan = jamendo_plan(jamendo.audio, jamendo.splits, 16000, "genre", 1)
    expected = expected_store(jamendo, "genre", 1)
    assert plan.tag_names == expected["tags"] == ["genre---electronic", "genre---pop",
                                                  "genre---rock"]  # fmt: skip
    listed = [(split, row[0]) for split, rows in expected["rows"].items() for row in rows]
    assert [(c.split, c.clip_id) for c in plan.clips] == listed
    test_ids = {t.track_id for t in jamendo.tracks[1]["test"]}
    assert {c.clip_id for c in plan.clips if c.split == "test"} <= test_ids
    assert plan.meta["split_rule"] == "split-1" and set(plan.meta["tag_categories"]) == {"genre"}
    names = {subset: split_file(Path("s"), subset, 3, "val").as_posix() for subset in SUBSETS}
    assert names == {
        "top50tags": "s/split-3/autotagging_top50tags-validation.tsv",
        "genre": "s/split-3/autotagging_genre-validation.tsv",
        "instrument": "s/split-3/autotagging_instrument-validation.tsv",
        "moodtheme": "s/split-3/autotagging_moodtheme-validation.tsv",
        "all": "s/split-3/autotagging-validation.tsv",
    }


def _copy_splits(jamendo: Jamendo, tmp_path: Path, edit: str) -> Path:
    """split-0's top50tags files, the validation file edited as ``edit`` says."""
    folder = tmp_path / "splits" / "split-0"
    folder.mkdir(parents=True)
    for name in ("train", "validation", "test"):
        text = (jamendo.splits / "split-0" / f"autotagging_top50tags-{name}.tsv").read_text()
        if name == "validation":
            lines = text.splitlines(keepends=True)
            if edit == "header":
                lines[0] = lines[0].replace("\t", ",")
            elif edit == "no tag":
                lines[2] = "\t".join(lines[2].split("\t")[:5]) + "\n"
            elif edit == "no category":
                lines[1] = lines[1].rstrip("\n") + "\tpiano\n"
            text = "".join(lines)
        (folder / f"autotagging_top50tags-{name}.tsv").write_text(text)
    return tmp_path / "splits"


def test_a_split_index_out_of_range_is_named(jamendo: Jamendo) -> None:
    """The flag is checked by ``tagger prepare``'s schema; the plan checks it for callers
    of ``jamendo_plan`` too."""
    with pytest.raises(ConfigError, match=r"--split-index 5: expected 0, 1, 2, 3 or 4"):
        jamendo_plan(jamendo.audio, jamendo.splits, 16000, split_index=5)


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        ("", ["--subset", "moods"], "--subset 'moods': expected one of top50tags, genre, "),
        ("", ["--subset", "instrument"], "autotagging_instrument-train.tsv: no such split file"),
        ("", ["--split-index", "2"], "split-2/autotagging_top50tags-train.tsv: no such split"),
        ("header", [], "validation.tsv: expected the tab-separated header TRACK_ID ARTIST_ID"),
        ("no tag", [], "validation.tsv line 3: track track_"),
        ("no category", [], "validation.tsv line 2: tag 'piano' is not of the form category"),
    ],
)
def test_bad_input_is_named(
    jamendo: Jamendo, tmp_path: Path, edit: str, args: list[str], message: str
) -> None:
    splits = _copy_splits(jamendo, tmp_path, edit) if edit else jamendo.splits
    argv = ["jamendo", "--audio", str(jamendo.audio), "--splits", str(splits),
            "--out", str(tmp_path / "store"), "--workers", "1", *args]  # fmt: skip
    with pytest.raises(ConfigError) as error:
        prepare(argv)
    assert message in str(error.value)
    if edit == "no tag":
        assert "has no tag; every row needs at least one tag after DURATION" in str(error.value)
    assert not (tmp_path / "store").exists()


def test_category_means_average_the_scored_tags_of_each_category() -> None:
    names = ["genre---a", "genre---b", "instrument---c", "mood/theme---d", "mood/theme---e"]
    means = category_means(names, [0.6, 0.8, 0.7, float("nan"), 0.9], [0.2, 0.4, 0.3, 0.5, 0.1])
    assert list(means) == ["genre", "instrument", "mood/theme"]
    assert means["genre"] == pytest.approx({"auc": 0.7, "pr_auc": 0.3})
    assert means["mood/theme"]["auc"] == pytest.approx(0.9)  # the NaN tag is left out
    assert means["mood/theme"]["pr_auc"] == pytest.approx(0.3)
    only_nan = category_means(["genre---a"], [float("nan")], [float("nan")])
    assert math.isnan(only_nan["genre"]["auc"])
    assert category_means(["guitar", "genre---rock"], [0.5, 0.5], [0.5, 0.5]) is None


@pytest.mark.slow
def test_train_on_a_jamendo_store_reports_per_category_aucs(
    jamendo: Jamendo, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    prepare(["jamendo", "--audio", str(jamendo.audio), "--splits", str(jamendo.splits),
             "--out", str(out), "--workers", "1"])  # fmt: skip
    done = run_cli(
        str(REPO_ROOT / "train.py"), "data=store", f"data.path={out}", "data.subclip_len=4096",
        "data.n_subclips=2", "data.random_windows=true", "data.train_subclips=1",
        "data.batch_size=4", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "completed"
    for stage in ("val", "test"):
        summary = metrics[stage]
        assert set(summary["per_category"]) == {"genre", "instrument", "mood/theme"}
        for category, figures in summary["per_category"].items():
            members = [t for t in metrics["tag_names"] if t.startswith(f"{category}---")]
            for figure in ("auc", "pr_auc"):
                per_tag = [summary[f"per_tag_{figure}"][t] for t in members]
                scored = [value for value in per_tag if value is not None]  # null: not scored
                assert scored, (stage, category)  # the fixture scores every category
                assert figures[figure] == pytest.approx(sum(scored) / len(scored))

    # eval.py on the same checkpoint and split writes the same per-category figures
    cfg = compose_config("eval", tmp_path / "eval",
                         [f"ckpt_path={metrics['test']['checkpoint']}", "split=test",
                          "trainer.enable_progress_bar=false"])  # fmt: skip
    evaluate(cfg)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert evaluated["per_category"].keys() == metrics["test"]["per_category"].keys()
    for category, figures in evaluated["per_category"].items():
        assert figures == pytest.approx(metrics["test"]["per_category"][category], abs=1e-5)
