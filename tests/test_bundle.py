"""``tagger export --format bundle`` and ``tagger predict BUNDLE``: a folder (model.onnx,
tagger.json, MODEL_CARD.md) that tags as its checkpoint does, in an environment with no torch;
its tagger.json read through one schema, bad fields refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from tagger.bundle import CARD_FILE, INFO_FILE, MODEL_FILE, check_info, model_card
from tagger.errors import ConfigError
from tagger.export import bundle_info
from tagger.module import load_trained
from tests.conftest import REPO_ROOT, run_tagger
from tests.test_gpu_check import repack_wheel

#: What a bundle needs besides tagger (and what those need): the torch-free environment.
BUNDLE_NEEDS = ("numpy", "soundfile", "soxr", "onnxruntime")
#: Their dependencies, as this environment has them installed.
BUNDLE_DEPENDENCIES = ("cffi", "pycparser", "typing_extensions", "flatbuffers", "packaging",
                       "protobuf")  # fmt: skip


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A stereo wav at 16 kHz (resampled), a flac at the model's rate, a file shorter than
    one window (zero-padded), and a long one (more than one batch of windows)."""
    folder = tmp_path_factory.mktemp("bundle_music")
    rng = np.random.default_rng(0)
    t = np.arange(40_000) / 16_000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(folder / "a.wav", np.stack([tone, rng.normal(0, 0.1, t.size)], axis=1), 16_000)
    soundfile.write(folder / "b.flac", rng.normal(0, 0.2, 30_000), 12_000)
    soundfile.write(folder / "c.wav", rng.normal(0, 0.1, 1_000), 12_000)
    soundfile.write(folder / "d.wav", rng.normal(0, 0.1, 12_000 * 14), 12_000)  # 41 windows
    return [folder / name for name in ("a.wav", "b.flac", "c.wav", "d.wav")]


@pytest.fixture(scope="module")
def info(tiny_checkpoint: Path) -> dict[str, Any]:
    """The tagger.json the tiny checkpoint's bundle gets (no model exported)."""
    model, config = load_trained(tiny_checkpoint)
    return bundle_info(model, config, tiny_checkpoint)


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported as a bundle (ONNX: seconds, so its tests are slow)."""
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    result = run_tagger("export", tiny_checkpoint, "--format", "bundle", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_FILE, INFO_FILE, CARD_FILE])
    return out


def probabilities(result: subprocess.CompletedProcess) -> dict[str, np.ndarray]:
    """Each file's probabilities from ``tagger predict --format json``'s output."""
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    return {Path(f["file"]).name: np.array(list(f["probabilities"].values()))
            for f in document["files"]}  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess, command: str) -> str:
    """The one line a bad input gets (exit status 2, no traceback); returned."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tagger {command}: error: "), result.stderr
    return lines[0]


def test_tagger_json_says_what_feeds_the_model_and_where_it_comes_from(
    info: dict[str, Any], tiny_run: dict, tiny_checkpoint: Path
) -> None:
    checked = check_info(json.loads(json.dumps(info)), "tagger.json")
    model, config = load_trained(tiny_checkpoint)
    assert checked.tag_names == model.tag_names == info["tag_names"]
    assert (checked.sample_rate, checked.window_length, checked.hop_length) == (
        config["data"]["sample_rate"], 4096, 4096)  # fmt: skip
    assert (checked.aggregation, checked.input_scale) == ("mean_logits", 32768.0)
    stored = model.thresholds if hasattr(model, "thresholds") else None
    if stored is None:  # a checkpoint with no thresholds: 0.5 for every tag, rule "default"
        assert info["thresholds"] == {"rule": "default", "split": None,
                                      "values": dict.fromkeys(model.tag_names, 0.5)}  # fmt: skip
    else:
        assert info["thresholds"]["values"] == stored["values"]
    assert info["data"]["name"] == "synthetic" and info["data"]["real_music"] is False
    assert info["data"]["clips"] == {"train": 60, "val": 30, "test": 30}
    assert info["test_metrics"] is None  # the tiny run was not tested
    assert info["checkpoint"]["file"] == "last.ckpt" and len(info["checkpoint"]["sha256"]) == 64
    card = model_card(info)
    assert "**Trained on synthetic audio**" in card and "No test metrics are known" in card


def test_the_runs_test_metrics_go_into_tagger_json_and_the_card(
    tiny_run: dict, tmp_path: Path
) -> None:
    """From the metrics.json beside the checkpoint, when that run tested this checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run_dir"], run)
    summary = json.loads((run / "metrics.json").read_text())
    tags = summary["tag_names"]
    per_tag = {tag: 0.5 + i / 100 for i, tag in enumerate(tags)}
    per_tag[tags[1]] = None  # a tag with no positive test clip: no figure
    summary["test"] = {"auc": 0.75, "pr_auc": 0.5, "per_tag_auc": per_tag,
                       "per_tag_pr_auc": per_tag, "skipped_tags": [tags[1]],
                       "checkpoint": summary["checkpoints"]["last"]}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(summary))
    last = run / "checkpoints" / "last.ckpt"
    model, config = load_trained(last)
    info = bundle_info(model, config, last)
    check_info(info, "tagger.json")
    metrics = info["test_metrics"]
    assert metrics["auc"] == 0.75 and metrics["checkpoint"] == "last.ckpt"
    assert metrics["per_tag_auc"][tags[0]] == 0.5 and metrics["per_tag_auc"][tags[1]] is None
    card = model_card(info)
    assert "ROC-AUC 0.750, PR-AUC 0.500" in card
    assert f"| {tags[0]} | 0.500 | 0.500 |" in card and f"| {tags[1]} | n/a | n/a |" in card

    summary["test"]["checkpoint"] = "/elsewhere/checkpoints/epoch003-auc0.9.ckpt"
    (run / "metrics.json").write_text(json.dumps(summary))
    assert bundle_info(model, config, last)["test_metrics"] is None  # another checkpoint's


def write_info(folder: Path, document: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / INFO_FILE).write_text(text)
    return folder


def changed(info: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``info`` with the dotted ``key`` set to ``value``."""
    document = json.loads(json.dumps(info))
    *path, last = key.split(".")
    node = document
    for part in path:
        node = node[part]
    node[last] = value
    return document


#: (dotted key, bad value, words the one line holds)
BAD_FIELDS = [
    ("format_version", 2, "format_version must be 1"),
    ("tag_names", "bass", "tag_names must be a list"),
    ("tag_names", [], "tag_names must be a list of 1 to"),
    ("sample_rate", -1, "sample_rate must be"),
    ("sample_rate", True, "sample_rate must be"),
    ("sample_rate", "12000", "sample_rate must be"),
    ("window_length", 0, "window_length must be"),
    ("hop_length", 10**7, "hop_length must be"),
    ("aggregation", "tagger.aggregation.clip_probabilities", "aggregation must be one of"),
    ("input_scale", 0, "input_scale must be"),
    ("thresholds.values", {}, "thresholds.values lacks the tag"),
    ("thresholds.rule", ["per_tag"], "thresholds.rule must be"),
    ("data.real_music", "yes", "data.real_music must be true or false"),
    ("checkpoint.sha256", "abc", "checkpoint.sha256 must be 64"),
    ("model.parameters", -3, "model.parameters must be"),
    ("extra", 1, "unknown field extra"),
    ("data._target_", "os.system", "holds a _target_ key (data._target_)"),
    ("_target_", "tagger.bundle.BundleTagger", "holds a _target_ key (_target_)"),
]


@pytest.mark.parametrize(("key", "value", "words"), BAD_FIELDS,
                         ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_FIELDS])  # fmt: skip
def test_a_bad_tagger_json_is_refused_in_one_line(
    info: dict[str, Any], music: list[Path], tmp_path: Path, key: str, value: Any, words: str
) -> None:
    folder = write_info(tmp_path / "bundle", changed(info, key, value))
    line = one_line_error(run_tagger("predict", folder, music[0]), "predict")
    assert str(folder / INFO_FILE) in line and words in line, line


def test_a_bad_threshold_value_and_broken_json_are_refused(
    info: dict[str, Any], music: list[Path], tmp_path: Path
) -> None:
    tag = info["tag_names"][0]
    folder = write_info(tmp_path / "b1", changed(info, f"thresholds.values.{tag}", 1.5))
    assert f"thresholds.values.{tag} must be" in one_line_error(
        run_tagger("predict", folder, music[0]), "predict")  # fmt: skip
    text = json.dumps(info)
    for name, document, words in [
        ("nan", text.replace('"input_scale": 32768.0', '"input_scale": NaN'), "NaN"),
        ("twice", text.replace('{"format"', '{"format": 1, "format"'), "given twice"),
        ("cut", text[:100], "not a bundle's JSON"),
        ("list", "[]", "must be an object"),
    ]:
        folder = write_info(tmp_path / name, document)
        assert words in one_line_error(run_tagger("predict", folder, music[0]), "predict")


def test_a_folder_without_tagger_json_is_not_a_bundle(music: list[Path], tmp_path: Path) -> None:
    line = one_line_error(run_tagger("predict", tmp_path, music[0]), "predict")
    assert f"{tmp_path} is a folder but not a tagger bundle" in line


def test_export_refuses_a_used_out_and_what_is_not_a_checkpoint(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    line = one_line_error(run_tagger("export", tiny_checkpoint, "--format", "bundle", "--out",
                                     used), "export")  # fmt: skip
    assert f"--out {used} is a folder with files in it" in line
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    line = one_line_error(run_tagger("export", used / "notes.txt", "--format", "bundle",
                                     "--out", tmp_path / "new"), "export")  # fmt: skip
    assert "notes.txt cannot be read" in line and not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_bundle_tags_as_its_checkpoint_does(
    bundle: Path, tiny_checkpoint: Path, music: list[Path], tmp_path: Path
) -> None:
    """Same probabilities and taggrams (within 1e-4), and a card that says synthetic."""
    expected = probabilities(run_tagger("predict", tiny_checkpoint, *music, "--format", "json"))
    got = probabilities(run_tagger("predict", bundle, *music, "--format", "json"))
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4, err_msg=name)
    for source, folder in [(tiny_checkpoint, "ckpt"), (bundle, "bundle")]:
        result = run_tagger("predict", source, music[0], "--taggram", tmp_path / folder,
                            "--hop", "0.1")  # fmt: skip
        assert result.returncode == 0, result.stderr
    read = [np.loadtxt(tmp_path / folder / "a.wav.taggram.csv", delimiter=",", skiprows=1)
            for folder in ("ckpt", "bundle")]  # fmt: skip
    np.testing.assert_allclose(read[1], read[0], atol=1e-4)
    assert "**Trained on synthetic audio**" in (bundle / CARD_FILE).read_text()

    # a tagger.json naming fewer tags than the model gives: one line
    fewer = tmp_path / "fewer"
    shutil.copytree(bundle, fewer)
    document = json.loads((fewer / INFO_FILE).read_text())
    dropped = document["tag_names"].pop()
    del document["thresholds"]["values"][dropped]
    write_info(fewer, document)
    line = one_line_error(run_tagger("predict", fewer, music[0]), "predict")
    assert f"gives logits of shape [1, {len(document['tag_names']) + 1}]" in line


def build_tagger_wheel(work: Path) -> Path:
    """tagger's wheel, built offline from a copy of its sources (as tests/test_install.py)."""
    source = work / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tagger", "conf"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps",
         "--no-index", "--no-build-isolation", "-q", "-w", str(work / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "wheel").glob("tagger-*.whl")
    return wheel


@pytest.mark.slow
def test_a_bundle_runs_where_only_numpy_soundfile_soxr_and_onnxruntime_are_installed(
    bundle: Path, tiny_checkpoint: Path, music: list[Path], tmp_path: Path
) -> None:
    """A fresh virtual environment (no system site-packages) with the four packages, from
    this environment's wheels, offline, and tagger installed with --no-deps: ``python -m
    tagger predict BUNDLE FILES`` gives the checkpoint's probabilities within 1e-4."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in (*BUNDLE_NEEDS, *BUNDLE_DEPENDENCIES):
        repack_wheel(name, wheels)
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check",
           "install", "-q", "--no-index"]  # fmt: skip
    for args in (["--find-links", str(wheels), *BUNDLE_NEEDS],
                 ["--no-deps", str(build_tagger_wheel(tmp_path / "build"))]):  # fmt: skip
        installed = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, installed.stderr[-3000:]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = ("import importlib.util as u; print([m for m in ('torch', 'hydra', 'omegaconf', "
             "'lightning', 'matplotlib') if u.find_spec(m)])")  # fmt: skip
    absent = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=clean,
                            cwd=tmp_path)  # fmt: skip
    assert absent.stdout.strip() == "[]", absent.stderr

    result = subprocess.run(
        [python, "-m", "tagger", "predict", str(bundle), *map(str, music), "--format", "json"],
        capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    got = probabilities(result)
    expected = probabilities(run_tagger("predict", tiny_checkpoint, *music, "--format", "json"))
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4, err_msg=name)
    where = subprocess.run([python, "-c", "import tagger; print(tagger.__file__)"],
                           capture_output=True, text=True, env=clean, cwd=tmp_path)  # fmt: skip
    assert where.stdout.startswith(str(env)), where.stdout  # the installed tagger, not the repo's

    # in that environment, --taggram (pictures: matplotlib, torch) is one line, exit 2
    result = subprocess.run(
        [python, "-m", "tagger", "predict", str(bundle), str(music[0]), "--taggram",
         str(tmp_path / "taggrams")], capture_output=True, text=True, env=clean, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "--taggram draws its pictures" in result.stderr
    assert "Traceback" not in result.stderr
    # and a checkpoint (torch's) is one line that says to export it as a bundle
    result = subprocess.run([python, "-m", "tagger", "predict", str(tiny_checkpoint),
                             str(music[0])], capture_output=True, text=True, env=clean,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "needs torch, which is not installed here: export it as a bundle" in result.stderr


def test_check_info_takes_what_export_writes(info: dict[str, Any]) -> None:
    check_info(info, "tagger.json")
    with pytest.raises(ConfigError, match="lacks the field tag_names"):
        check_info({k: v for k, v in info.items() if k != "tag_names"}, "tagger.json")


def _places(node: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a tree of dicts and lists, as a tuple of keys (the root excluded)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()  # fmt: skip
    found = []
    for key, value in items:
        found.append((*path, key))
        found.extend(_places(value, (*path, key)))
    return found


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_generated_tagger_json_values_are_taken_or_refused_in_one_line(
    info: dict[str, Any], data: st.DataObject
) -> None:
    """The schema is the gate of every field: any JSON value (NaN, inf, text, lists, a
    ``_target_`` dict) at any place of a real tagger.json is taken or refused with one
    ``ConfigError`` line naming the file; a ``_target_`` key is never taken."""
    places = _places(info)
    document = json.loads(json.dumps(info))
    place = data.draw(st.sampled_from(places))
    value = data.draw(JSON_VALUES | st.just({"_target_": "os.system", "command": "true"}))
    node = document
    for key in place[:-1]:
        node = node[key]
    node[place[-1]] = value
    try:
        check_info(document, "B/tagger.json")
    except ConfigError as refused:
        assert "\n" not in str(refused) and "B/tagger.json" in str(refused)
    else:
        assert "_target_" not in json.dumps(value)
