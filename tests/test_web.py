"""tagger export --format web (issue #22): the page's folder, its gates, and the page itself in a
headless Chromium against tagger predict.

The browser tests need Chromium and ONNX Runtime Web's files (``scripts/web_setup.sh
--browser``); without them they are skipped with a line saying why, except under
``TAGGER_REQUIRE_WEB=1`` (CI: ``.ci/run``), where they fail. ``TAGGER_WEB_SCREENSHOT=PATH``
also saves a screenshot of the page showing a result (docs/web.png).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import soundfile

from tagger.errors import ConfigError
from tagger.web import ORT_ENV, ORT_FILES, ORT_WEB_VERSION, PAGE_FILES, find_ort_web
from tests.browser import Browser, find_chromium, serve
from tests.conftest import REPO_ROOT, run_tagger

REQUIRE = os.environ.get("TAGGER_REQUIRE_WEB") == "1"
RESULT = "document.getElementById('result')?.textContent"
ERROR = "document.getElementById('error')?.textContent"
TAGGRAM = "document.getElementById('taggram-data').textContent"


def fake_ort(folder: Path) -> Path:
    """A folder with files of ONNX Runtime Web's names (enough for the export, not a browser)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ORT_FILES:
        (folder / name).write_text("// not onnxruntime-web\n")
    return folder


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tagger export: error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- the gates (no export)
def test_out_with_files_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ORT_ENV, str(fake_ort(tmp_path / "ort")))
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("mine")
    line = one_line_error(run_tagger("export", tmp_path / "none.ckpt", "--format", "web",
                                     "--out", out))  # fmt: skip
    assert "--out" in line and "folder with files" in line
    assert (out / "index.html").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    line = one_line_error(run_tagger("export", tmp_path / "none.ckpt", "--format", "web",
                                     "--out", tmp_path / "file"))  # fmt: skip
    assert "is a file" in line


def test_not_a_checkpoint_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ORT_ENV, str(fake_ort(tmp_path / "ort")))
    bogus = tmp_path / "model.ckpt"
    bogus.write_bytes(b"not a checkpoint at all")
    for checkpoint in (bogus, tmp_path / "missing.ckpt", tmp_path / "ort"):  # a folder: no bundle
        line = one_line_error(run_tagger("export", checkpoint, "--format", "web",
                                         "--out", tmp_path / "site"))  # fmt: skip
        assert str(checkpoint) in line
    assert not (tmp_path / "site").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ort_web_missing_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ORT_ENV, str(tmp_path / "empty"))
    line = one_line_error(run_tagger("export", tmp_path / "x.ckpt", "--format", "web",
                                     "--out", tmp_path / "site"))  # fmt: skip
    assert ORT_ENV in line and "onnxruntime-web" in line and ORT_WEB_VERSION in line
    monkeypatch.delenv(ORT_ENV)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tagger.web.__file__", str(tmp_path / "tagger" / "web.py"))
    with pytest.raises(ConfigError, match="npm install") as caught:
        find_ort_web()
    assert "\n" not in str(caught.value)


def test_package_json_pins_the_version() -> None:
    package = json.loads((REPO_ROOT / "package.json").read_text())
    assert package["dependencies"] == {"onnxruntime-web": ORT_WEB_VERSION}
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == ORT_WEB_VERSION


# ---------------------------------------------------------------- the folder (an export)
@pytest.mark.slow
def test_site_from_checkpoint_and_bundle(tiny_checkpoint: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv(ORT_ENV, str(fake_ort(tmp_path / "ort")))
    site = tmp_path / "site"
    result = run_tagger("export", tiny_checkpoint, "--format", "web", "--out", site)
    assert result.returncode == 0, result.stderr
    assert f"python -m http.server -d {site}" in result.stdout
    names = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    assert names == {*PAGE_FILES, "model.onnx", "tagger.json", "MODEL_CARD.md",
                     *(f"ort/{n}" for n in ORT_FILES), "ort/README.txt"}  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # the folder is a bundle: tagger predict runs it
    wav = tmp_path / "song.wav"
    soundfile.write(wav, song(12000, 2.0), 12000, subtype="PCM_16")
    tagged = run_tagger("predict", site, wav, "--format", "json")
    assert tagged.returncode == 0, tagged.stderr
    # from the bundle: the same bundle files
    again = tmp_path / "again"
    result = run_tagger("export", site, "--format", "web", "--out", again)
    assert result.returncode == 0, result.stderr
    for name in ("model.onnx", "tagger.json", "MODEL_CARD.md", *PAGE_FILES):
        assert (again / name).read_bytes() == (site / name).read_bytes(), name


# ---------------------------------------------------------------- the page in a browser
def song(rate: int, seconds: float, stereo: bool = False) -> np.ndarray:
    """The same music-like test signal at any rate (tones below 3 kHz, a pulse, a sweep), so
    that resampling changes it little."""
    t = np.arange(int(rate * seconds)) / rate
    left = (0.25 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 330 * t)
            + 0.1 * np.sin(2 * np.pi * (500 + 300 * t) * t)
            + 0.2 * np.sin(2 * np.pi * 110 * t) * (np.sin(2 * np.pi * 2 * t) > 0.6))  # fmt: skip
    if not stereo:
        return left.astype(np.float32)
    right = 0.6 * left + 0.1 * np.sin(2 * np.pi * 880 * t)
    return np.stack([left, right], axis=1).astype(np.float32)


def web_tools() -> tuple[str, Path]:
    """Chromium and ONNX Runtime Web's folder; skips (fails under TAGGER_REQUIRE_WEB=1) when
    either is missing."""
    chromium = find_chromium()
    try:
        ort_dir = find_ort_web()
    except ConfigError as error:
        why = f"ONNX Runtime Web is not installed (bash scripts/web_setup.sh): {error}"
    else:
        why = None if chromium else (
            "no Chromium to run the page in (apt-get install chromium, or TAGGER_CHROMIUM=PATH)"
        )  # fmt: skip
    if why:
        if REQUIRE:
            pytest.fail(f"TAGGER_REQUIRE_WEB=1: {why}")
        pytest.skip(why)
    assert chromium is not None
    return chromium, ort_dir


@pytest.fixture(scope="module")
def page(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The tiny checkpoint's page, served, with audio beside it, open in one Chromium."""
    chromium, ort_dir = web_tools()
    root = tmp_path_factory.mktemp("web")
    site = root / "site"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ORT_ENV, str(ort_dir))
        result = run_tagger("export", tiny_checkpoint, "--format", "web", "--out", site)
    assert result.returncode == 0, result.stderr
    rate = json.loads((site / "tagger.json").read_text())["sample_rate"]
    audio = {"song.wav": (rate, song(rate, 3.3)),  # a remainder shorter than a window
             "song-22050.wav": (22050, song(22050, 3.3, stereo=True)),
             "short.wav": (rate, song(rate, 0.1))}  # shorter than one window: padded  # fmt: skip
    for name, (file_rate, samples) in audio.items():
        soundfile.write(site / name, samples, file_rate, subtype="PCM_16")
    (site / "notes.wav").write_text("these are notes, not audio\n")
    with serve(site) as base, Browser(chromium) as browser:
        yield {"site": site, "base": base, "browser": browser, "root": root}


def run_page(page: dict, audio: str, wait: str = RESULT) -> tuple[dict | None, str, list[str]]:
    """Open the page with ``?audio=``; its result document (None if it shows an error), the
    error text, and the console errors of this load."""
    browser: Browser = page["browser"]
    seen = len(browser.events)
    browser.open(f"{page['base']}index.html?audio={audio}")
    browser.wait_for(f"{wait} || {ERROR}", timeout=180)
    text, error = browser.evaluate(RESULT), browser.evaluate(ERROR)
    errors = Browser.console_errors_of(browser.events[seen:])
    return (json.loads(text) if text else None), error, errors


def predict(page: dict, *args: str | Path) -> dict:
    result = run_tagger("predict", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_page_tags_as_predict_does(page: dict, tiny_checkpoint: Path) -> None:
    site = page["site"]
    document, error, console = run_page(page, "song.wav")
    assert error == "" and document is not None
    assert console == [], console
    expected = predict(page, tiny_checkpoint, site / "song.wav")
    assert set(document) == set(expected) and document["tags"] == expected["tags"]
    assert document["thresholds"]["source"] == expected["thresholds"]["source"]
    for tag, value in expected["thresholds"]["values"].items():
        assert document["thresholds"]["values"][tag] == pytest.approx(value, abs=1e-6)
    (mine,), (theirs,) = document["files"], expected["files"]
    assert set(mine) == set(theirs) and mine["file"] == "song.wav"
    assert mine["windows"] == theirs["windows"] > 1
    for tag in expected["tags"]:
        assert mine["probabilities"][tag] == pytest.approx(theirs["probabilities"][tag], abs=1e-3)
    thresholds = expected["thresholds"]["values"]
    clear = {t for t in expected["tags"]
             if abs(theirs["probabilities"][t] - thresholds[t]) > 1e-3}  # fmt: skip
    decided = {e["tag"] for e in mine["tags"]}
    assert decided & clear == {e["tag"] for e in theirs["tags"]} & clear
    assert [e["tag"] for e in mine["top"]][:3] == [e["tag"] for e in theirs["top"]][:3]

    # the taggram, against tagger predict --taggram (the default hop: the window)
    taggrams = page["root"] / "taggrams"
    result = run_tagger("predict", tiny_checkpoint, site / "song.wav", "--taggram", taggrams)
    assert result.returncode == 0, result.stderr
    with (taggrams / "song.wav.taggram.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["start_s", *expected["tags"]]
    want = np.array(rows[1:], dtype=np.float64)
    got = json.loads(page["browser"].evaluate(TAGGRAM))
    assert got["tags"] == expected["tags"]
    assert np.allclose(got["starts_s"], want[:, 0], atol=1e-6)
    probabilities = np.array(got["probabilities"])
    assert probabilities.shape == want[:, 1:].shape
    assert np.abs(probabilities - want[:, 1:]).max() < 1e-3

    screenshot = os.environ.get("TAGGER_WEB_SCREENSHOT")
    if screenshot:
        page["browser"].screenshot(Path(screenshot))


@pytest.mark.slow
def test_page_resamples_and_mixes(page: dict, tiny_checkpoint: Path) -> None:
    """A stereo file at 22050 Hz: the same top tag as tagger predict gives it (and as the
    model's own rate gives the same song), probabilities close (two resamplers)."""
    document, error, console = run_page(page, "song-22050.wav")
    assert error == "" and console == [], (error, console)
    expected = predict(page, tiny_checkpoint, page["site"] / "song-22050.wav")
    (mine,), (theirs,) = document["files"], expected["files"]
    assert mine["top"][0]["tag"] == theirs["top"][0]["tag"]
    assert mine["windows"] == theirs["windows"]
    for tag in expected["tags"]:
        assert mine["probabilities"][tag] == pytest.approx(theirs["probabilities"][tag], abs=0.02)
    short, error, _ = run_page(page, "short.wav")
    assert error == "" and short["files"][0]["windows"] == 1
    theirs = predict(page, tiny_checkpoint, page["site"] / "short.wav")["files"][0]
    for tag in expected["tags"]:
        probability = short["files"][0]["probabilities"][tag]
        assert probability == pytest.approx(theirs["probabilities"][tag], abs=1e-3)


@pytest.mark.slow
def test_page_shows_errors(page: dict) -> None:
    document, error, _ = run_page(page, "notes.wav", wait="false")
    assert document is None and "notes.wav" in error and "decode" in error
    document, error, _ = run_page(page, "missing.wav", wait="false")
    assert document is None and "missing.wav" in error and "404" in error
    elsewhere = quote("http://example.invalid/x.wav", safe="")
    document, error, _ = run_page(page, elsewhere, wait="false")
    assert document is None and "this page's own site" in error
    # a model that does not load
    broken = page["site"] / "broken"
    shutil.copytree(page["site"], broken, ignore=shutil.ignore_patterns("broken"))
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    browser: Browser = page["browser"]
    browser.open(f"{page['base']}broken/index.html?audio=song.wav")
    error = browser.wait_for(ERROR, timeout=120)
    assert "model.onnx cannot be loaded" in error
    assert browser.evaluate(RESULT) == ""
