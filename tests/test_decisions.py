"""Decisions (``tagger.decisions``): thresholds fitted on validation, stored with the run,
and the precision, recall and F1 at them, checked against brute force and scikit-learn on
predictions computed here from the checkpoints; ``tagger predict`` decides with them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tagger.checkpoint_io import read_checkpoint
from tagger.decisions import (
    DEFAULT_THRESHOLD,
    RULES,
    decide,
    decided_tags,
    decision_scores,
    f1_best_threshold,
    fit_thresholds,
    stored_thresholds,
)
from tagger.errors import ConfigError
from tagger.evaluate import load_for_evaluation
from tagger.module import load_trained
from tagger.predict import Tagger
from tagger.settings import SETTINGS
from tests.conftest import TINY, compose_config, run_tagger

# --- the rule, on arrays -----------------------------------------------------------------


def brute_force_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The best F1 over every threshold at a distinct score, and the highest such threshold."""
    found = [(f1_score(labels, scores >= s, zero_division=0.0), s) for s in np.unique(scores)]
    best = max(f1 for f1, _ in found)
    return best, max(s for f1, s in found if f1 == best)


@pytest.mark.parametrize("seed", range(40))
def test_the_per_tag_threshold_is_f1_best_and_the_highest_of_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # coarse scores make ties of score and of F1; fine float32 ones are what a model gives
    scores = rng.integers(0, 8, n) / 8 if seed % 2 else rng.random(n).astype(np.float32)
    labels = rng.random(n) < rng.uniform(0.05, 0.9)
    threshold = f1_best_threshold(scores, labels)
    if not labels.any():
        assert threshold is None
        return
    best, highest = brute_force_f1(scores, labels)
    assert f1_score(labels, scores >= threshold) == best
    assert ((scores >= threshold) == (scores >= highest)).all()  # the same decisions
    lower = scores[scores < highest]
    assert threshold <= highest and (lower.size == 0 or threshold > lower.max())  # halfway
    # float32 probabilities compared in float32 decide the same
    assert ((np.float32(scores) >= np.float32(threshold)) == (scores >= threshold)).all()


def test_a_tag_with_no_positive_takes_the_shared_threshold() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((50, 4)).astype(np.float32)
    labels = rng.random((50, 4)) < 0.3
    labels[:, 2] = False
    per_tag, shared = fit_thresholds(scores, labels), fit_thresholds(scores, labels, "shared")
    assert per_tag.no_positive == (2,) and shared.no_positive == ()
    assert per_tag.values[2] == shared.values[0] and len(set(shared.values)) == 1
    for k in (0, 1, 3):
        assert per_tag.values[k] == f1_best_threshold(scores[:, k], labels[:, k])
    # shared: the best micro F1 over every (clip, tag) pair
    best, _ = brute_force_f1(scores.ravel(), labels.ravel())
    assert f1_score(labels.ravel(), scores.ravel() >= shared.values[0]) == best
    nothing = fit_thresholds(scores, np.zeros_like(labels))
    assert (nothing.values == DEFAULT_THRESHOLD).all() and nothing.no_positive == (0, 1, 2, 3)


@pytest.mark.parametrize("seed", range(6))
def test_decision_scores_equal_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random((40, 6)) < 0.25
    labels[:, 1] = False  # no positive
    decided = rng.random((40, 6)) < 0.3
    decided[:, 2] = False  # never decided
    decided[:, 1] = False if seed % 2 else decided[:, 1]  # nothing to score at all
    tags = list("abcdef")
    got = decision_scores(labels, decided, tags)
    kw = {"zero_division": np.nan}
    per_tag = precision_recall_fscore_support(labels, decided, average=None, **kw)
    for i, name in enumerate(("precision", "recall", "f1")):
        np.testing.assert_allclose([got["per_tag"][t][name] for t in tags], per_tag[i],
                                   equal_nan=True)  # fmt: skip
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(labels, decided, average=average, **kw)
        assert got[average] == pytest.approx({"precision": p, "recall": r, "f1": f}, nan_ok=True)
    assert [got["per_tag"][t]["positives"] for t in tags] == labels.sum(0).tolist()


def test_decide_and_the_decided_tags() -> None:
    probabilities = np.array([0.2, 0.9, 0.5, 0.7], np.float32)
    assert decide(probabilities, 0.5).tolist() == [False, True, True, True]
    assert decided_tags(probabilities, [0.1, 0.95, 0.5, 0.6], "abcd") == [
        ("d", pytest.approx(0.7)), ("c", 0.5), ("a", pytest.approx(0.2))
    ]  # fmt: skip


def test_the_rule_setting_takes_the_rules() -> None:
    assert SETTINGS["decisions.rule"].choices == RULES


@pytest.mark.parametrize("stored", [
    [0.5], {"rule": "per_tag", "split": "val"}, {"rule": 3, "split": "val", "values": {}},
    {"rule": "per_tag", "split": "val", "values": {"a": 0.5}},
    {"rule": "per_tag", "split": "val", "values": {"b": 0.5, "a": 0.5}},
    {"rule": "per_tag", "split": "val", "values": {"a": float("nan"), "b": 0.5}},
    {"rule": "per_tag", "split": "val", "values": {"a": 1.5, "b": 0.5}},
    {"rule": "per_tag", "split": "val", "values": {"a": True, "b": 0.5}},
    {"rule": "per_tag", "split": "val", "values": {"a": {"_target_": "os.system"}, "b": 0.5}},
])  # fmt: skip
def test_stored_thresholds_of_another_shape_are_refused(stored: Any) -> None:
    with pytest.raises(ConfigError, match=r"^ckpt: thresholds"):
        stored_thresholds(stored, ["a", "b"], "ckpt")
    assert stored_thresholds(None, ["a"], "ckpt") is None


# --- a trained run ------------------------------------------------------------------------


def predictions(ckpt: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of a split, computed here from the checkpoint's weights."""
    model, _, datamodule, _ = load_for_evaluation(ckpt, {}, split)
    probs, labels = [], []
    with torch.no_grad():
        for batch in datamodule.loader(split):
            probs.append(model.predict_clips(batch["audio"]))
            labels.append(batch["labels"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy() >= 0.5


def assert_f1_best_on_val(ckpt: str | Path, values: dict[str, float]) -> None:
    probs, labels = predictions(ckpt, "val")
    for k, tag in enumerate(values):
        if labels[:, k].any():
            best, _ = brute_force_f1(probs[:, k], labels[:, k])
            assert f1_score(labels[:, k], probs[:, k] >= values[tag]) == best, tag


def assert_decisions_equal_scikit_learns(decisions: dict, probs: np.ndarray,
                                         labels: np.ndarray, values: dict) -> None:  # fmt: skip
    decided = probs >= np.array(list(values.values()))
    kw = {"zero_division": np.nan}
    per_tag = f1_score(labels, decided, average=None, **kw)
    got = [decisions["per_tag"][tag]["f1"] for tag in values]
    np.testing.assert_allclose(np.array(got, dtype=float), per_tag, equal_nan=True)
    for average in ("micro", "macro"):
        assert decisions[average]["f1"] == pytest.approx(f1_score(labels, decided,
                                                                  average=average, **kw))
        p, r, _, _ = precision_recall_fscore_support(labels, decided, average=average, **kw)
        assert decisions[average]["precision"] == pytest.approx(p)
        assert decisions[average]["recall"] == pytest.approx(r)


def test_a_run_stores_val_fitted_thresholds_in_metrics_and_checkpoints(tiny_run: dict) -> None:
    written = json.loads((Path(tiny_run["run_dir"]) / "metrics.json").read_text())
    section = written["thresholds"]
    assert section["rule"] == "per_tag" and section["split"] == "val"
    assert list(section["values"]) == tiny_run["tag_names"]
    best, last = tiny_run["checkpoints"]["best"], tiny_run["checkpoints"]["last"]
    assert section["checkpoint"] == best
    stored = read_checkpoint(best)["thresholds"]  # weights-only, plain data
    assert stored == {"rule": "per_tag", "split": "val", "values": section["values"]}
    assert_f1_best_on_val(best, section["values"])
    assert_f1_best_on_val(last, read_checkpoint(last)["thresholds"]["values"])  # its own fit
    assert load_trained(last)[0].thresholds == read_checkpoint(last)["thresholds"]


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("eval")
    result = run_tagger("eval", f"ckpt_path={tiny_checkpoint}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_eval_fits_on_val_and_reports_the_test_split_at_those_thresholds(
    evaluated: dict, tiny_checkpoint: Path
) -> None:
    assert evaluated["split"] == "test" and evaluated["thresholds"]["source"] == "fitted"
    values = evaluated["thresholds"]["values"]
    assert_f1_best_on_val(tiny_checkpoint, values)
    probs, labels = predictions(tiny_checkpoint, "test")
    assert_decisions_equal_scikit_learns(evaluated["test"]["decisions"], probs, labels, values)


@pytest.mark.slow  # a second tiny training, with its test pass, and its resumption
def test_training_reports_test_f1_at_its_thresholds_as_scikit_learn_does(tmp_path: Path) -> None:
    from tagger.train import train

    summary = train(compose_config("train", tmp_path / "run", [*TINY, "decisions.rule=shared"]))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    values = written["thresholds"]["values"]
    assert written["thresholds"]["rule"] == "shared" and len(set(values.values())) == 1
    best = summary["checkpoints"]["best"]
    assert read_checkpoint(best)["thresholds"]["values"] == values
    probs, labels = predictions(best, "val")
    f1, _ = brute_force_f1(probs.ravel(), labels.ravel())
    assert f1_score(labels.ravel(), probs.ravel() >= next(iter(values.values()))) == f1
    probs, labels = predictions(best, "test")
    assert_decisions_equal_scikit_learns(written["test"]["decisions"], probs, labels, values)
    # a checkpoint with thresholds resumes: the longer run fits its own
    resumed = train(compose_config("train", tmp_path / "more", [
        *TINY, "trainer.max_epochs=2", f"ckpt_path={summary['checkpoints']['last']}"]))
    assert resumed["epochs"] == 2 and "thresholds" in resumed


# --- tagger predict and the other commands ---------------------------------------------------


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, 0.3 * np.random.default_rng(1).standard_normal(24_000), 12_000)
    return path


def test_predict_prints_the_tags_decided_at_the_checkpoints_thresholds(
    tiny_checkpoint: Path, song: Path
) -> None:
    tagger = Tagger.from_checkpoint(tiny_checkpoint)
    thresholds = read_checkpoint(tiny_checkpoint)["thresholds"]["values"]
    assert tagger.thresholds == thresholds
    probabilities = tagger.tag(song).probabilities
    decided = decided_tags(probabilities, list(thresholds.values()), tagger.tag_names)

    table = run_tagger("predict", tiny_checkpoint, song)
    assert table.returncode == 0 and "note" not in table.stderr, table.stderr
    line = ", ".join(f"{tag} {p:.3f}" for tag, p in decided)
    line = line or "none (no tag reaches its threshold)"
    assert table.stdout.splitlines()[1] == f"  tags: {line}"

    document = json.loads(run_tagger("predict", tiny_checkpoint, song, "--format", "json").stdout)
    assert document["thresholds"] == {"source": "checkpoint", "values": thresholds}
    (entry,) = document["files"]
    assert [(d["tag"], d["probability"]) for d in entry["tags"]] == decided
    for tag, p in entry["probabilities"].items():
        assert (tag in [d["tag"] for d in entry["tags"]]) == (p >= thresholds[tag])

    everything = json.loads(run_tagger("predict", tiny_checkpoint, song, "--format", "json",
                                       "--threshold", "0").stdout)  # fmt: skip
    assert everything["thresholds"]["source"] == "--threshold"
    assert sorted(d["tag"] for d in everything["files"][0]["tags"]) == sorted(tagger.tag_names)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "2", "text", "1.0000001"])
def test_predict_refuses_a_bad_threshold_in_one_line(tiny_checkpoint: Path, song: Path,
                                                     value: str) -> None:  # fmt: skip
    result = run_tagger("predict", tiny_checkpoint, song, "--threshold", value)
    assert result.returncode == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("tagger predict: error: argument --threshold: must be a number")
    assert f"not {value!r}" in errors[0] and "from 0 to 1" in errors[0]


def test_a_checkpoint_without_thresholds_decides_at_one_half_and_says_so_once(
    tiny_checkpoint: Path, song: Path, tmp_path: Path
) -> None:
    contents = torch.load(tiny_checkpoint, weights_only=True)
    del contents["thresholds"]
    old = tmp_path / "old.ckpt"
    torch.save(contents, old)
    assert load_trained(old)[0].thresholds is None
    result = run_tagger("predict", old, song, song, "--format", "json")
    assert result.returncode == 0
    assert result.stderr.count("note: the checkpoint stores no decision thresholds") == 1
    document = json.loads(result.stdout)
    assert document["thresholds"]["source"] == "default"
    assert set(document["thresholds"]["values"].values()) == {0.5}
    for entry in document["files"]:
        assert [d["tag"] for d in entry["tags"]] == [
            tag for tag, p in sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])
            if p >= 0.5
        ]  # fmt: skip


def test_a_checkpoint_with_thresholds_loads_in_every_command(
    tiny_checkpoint: Path, song: Path, tmp_path: Path
) -> None:
    assert "thresholds" in read_checkpoint(tiny_checkpoint)
    commands = {
        "predict": ["predict", tiny_checkpoint, song],
        "embed": ["embed", tiny_checkpoint, song, "--out", tmp_path / "e.npy"],
        "export": ["export", tiny_checkpoint, "--format", "torchscript", "--out",
                   tmp_path / "m.pt"],
        "robustness": ["robustness", tiny_checkpoint, "--families", "gain", "--gains", "0",
                       "--out", tmp_path / "rob"],
    }  # fmt: skip
    for name, argv in commands.items():
        result = run_tagger(*argv)
        assert result.returncode == 0, (name, result.stderr[-2000:])
    # eval.py: the module's fixture ``evaluated``; train.py resumes one (slow test above)


def test_planted_thresholds_are_refused_in_one_line(tiny_checkpoint: Path, song: Path,
                                                    tmp_path: Path) -> None:  # fmt: skip
    contents = torch.load(tiny_checkpoint, weights_only=True)
    planted = tmp_path / "planted.ckpt"
    tag = contents["hyper_parameters"]["tag_names"][0]
    for where, value in [
        ("root", {"_target_": "os.system", "command": "true"}),
        ("values", {"_target_": "os.system"}),
        ("tag", {"_target_": "os.system"}),
        ("tag", float("nan")),
        ("tag", -0.5),
        ("rule", ["per_tag"]),
    ]:
        changed = copy.deepcopy(contents)
        if where == "root":
            changed["thresholds"] = value
        elif where == "tag":
            changed["thresholds"]["values"][tag] = value
        else:
            changed["thresholds"][where] = value
        torch.save(changed, planted)
        with pytest.raises(ConfigError, match=f"^checkpoint {planted}: thresholds"):
            load_trained(planted)
        result = run_tagger("predict", planted, song)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, where


def test_the_report_averages_the_test_f1_over_seeds(tmp_path: Path) -> None:
    """``tagger report``: test micro and macro F1 (mean ± std over seeds) in report.csv and
    report.md; '–' for a config whose runs have no test split."""
    import csv

    from tagger.report import write_report
    from tests.test_report import _jamendo_run, _job

    for model, seed, f1 in (("a", 1, 0.40), ("a", 2, 0.50), ("b", 1, None)):
        metrics = _jamendo_run(seed, f"m.{model}", 0.8, 0.7)
        if f1 is not None:
            metrics["test"]["decisions"] = {"micro": {"f1": f1}, "macro": {"f1": f1 / 2}}
        _job(tmp_path, f"{model}_{seed}", [f"model={model}", f"seed={seed}"], json.dumps(metrics))
    report = write_report([tmp_path], tmp_path / "out")
    with report.csv.open() as f:
        rows = {row["config"]: row for row in csv.DictReader(f)}
    assert float(rows["model=a"]["test_micro_f1_mean"]) == pytest.approx(0.45)
    assert float(rows["model=a"]["test_macro_f1_mean"]) == pytest.approx(0.225)
    assert rows["model=b"]["test_micro_f1_mean"] == ""
    text = report.markdown.read_text()
    assert "| difference | test micro F1 | test macro F1 |" in text
    assert f"| {0.45:.4f} ± {np.std([0.4, 0.5], ddof=1):.4f} | {0.225:.4f} ± " in text
    assert "| n/a | n/a | – | – |" in text
