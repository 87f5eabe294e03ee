"""A page to try a trained tagger in a browser (``tagger export CKPT --format web --out DIR``,
or from a bundle: ``tagger export BUNDLE --format web --out DIR``): a static folder that any
web server serves (``python -m http.server -d DIR``) and that works offline.

The folder (``write_site``):

* a bundle (``tagger.bundle``): ``model.onnx``, ``tagger.json``, ``MODEL_CARD.md``, written by
  ``tagger.export.export_bundle`` or copied from a bundle (``copy_bundle``), so ``tagger
  predict DIR FILES`` also runs it;
* the page, tagger's package data ``tagger/page/`` (``PAGE_FILES``): ``index.html``,
  ``app.js``, ``style.css``. The page decodes a chosen or dropped file (or ``?audio=URL``, same
  origin) with WebAudio at the model's rate, averages the channels, cuts the windows with
  the bundle's hop as ``tagger predict`` does, runs them with ONNX Runtime Web (wasm, one
  thread) and shows the decided tags, every tag's probability and the taggram; its result,
  in the shape of ``tagger predict --format json``, goes into ``<pre id="result">`` and can
  be saved; errors go into ``<pre id="error">``. Nothing is sent anywhere.
* ``ort/``: ONNX Runtime Web's files (``ORT_FILES``, from the npm package ``onnxruntime-web``),
  copied from where ``find_ort_web`` finds them. tagger never downloads them: ``npm install``
  in tagger's checkout (its ``package.json`` pins ``ORT_WEB_VERSION``) puts them in
  ``node_modules/onnxruntime-web/dist``, or ``TAGGER_ORT_WEB=DIR`` names a folder holding them.

The folder is built beside ``--out`` and renamed into place when whole: a failed export
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

from tagger.bundle import CARD_FILE, INFO_FILE, MODEL_FILE, read_info
from tagger.errors import ConfigError
from tagger.run_files import OutputError

#: ``tagger export --format`` of a page.
FORMAT = "web"
#: The environment variable naming a folder with ONNX Runtime Web's files.
ORT_ENV = "TAGGER_ORT_WEB"
#: The version of the npm package ``onnxruntime-web`` that ``package.json`` pins.
ORT_WEB_VERSION = "1.31.1"
#: ONNX Runtime Web's files the page loads (its wasm build, the ES module and its loader).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
#: The folder of the site that holds them.
ORT_DIR = "ort"
#: The page's files, package data of tagger (``tagger/page/``).
PAGE_FILES = ("index.html", "app.js", "style.css")
#: Where ``npm install`` puts the files, under tagger's checkout (or the working directory).
NPM_DIST = Path("node_modules", "onnxruntime-web", "dist")


def check_site_out(out: Path) -> None:
    """``ConfigError`` unless ``out`` is a new or empty folder (a page is never written over
    files)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a folder with files in it" if out.is_dir() else "a file"
        raise ConfigError(f"--out {out} is {what}; a page is written into a new folder: "
                          "choose another --out or remove it")  # fmt: skip


def _has_ort_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ORT_FILES)


def find_ort_web(environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding ONNX Runtime Web's ``ORT_FILES``: ``$TAGGER_ORT_WEB`` when set, else
    ``node_modules/onnxruntime-web/dist`` in tagger's checkout or the working directory
    (``npm install``). Raises ``ConfigError`` saying how to get them, in one line."""
    environ = os.environ if environ is None else environ
    named = environ.get(ORT_ENV)
    if named:
        folder = Path(named)
        if not _has_ort_files(folder):
            missing = next(name for name in ORT_FILES if not (folder / name).is_file())
            raise ConfigError(f"{ORT_ENV}={named} has no {missing}: name the dist folder of the "
                              f"npm package onnxruntime-web {ORT_WEB_VERSION} (it holds "
                              f"{', '.join(ORT_FILES)})")  # fmt: skip
        return folder
    checkout = Path(__file__).resolve().parents[1]
    for root in dict.fromkeys((checkout, Path.cwd())):
        if _has_ort_files(root / NPM_DIST):
            return root / NPM_DIST
    raise ConfigError(f"--format web copies ONNX Runtime Web's files into the page, and none "
                      f"are found: run npm install in tagger's checkout ({checkout}; its "
                      f"package.json pins onnxruntime-web {ORT_WEB_VERSION}), or set {ORT_ENV}="
                      "DIR to the dist folder of onnxruntime-web")  # fmt: skip


def ort_version(folder: Path) -> str | None:
    """The version in ``folder/../package.json`` (an npm package's dist folder), else None."""
    try:
        version = json.loads((folder.parent / "package.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def copy_bundle(source: Path, out: Path) -> list[Path]:
    """Copy the bundle ``source`` (checked: ``read_info``; it must hold ``model.onnx``) into the
    folder ``out``; ``MODEL_CARD.md`` when it has one. Returns the paths written."""
    read_info(source)
    if not (source / MODEL_FILE).is_file():
        raise ConfigError(f"bundle {source} has no {MODEL_FILE}")
    paths = []
    for name in (MODEL_FILE, CARD_FILE, INFO_FILE):
        if (source / name).is_file():
            paths.append(Path(shutil.copyfile(source / name, out / name)))
    return paths


def write_site(out: Path, write_bundle: Callable[[Path], object], ort_dir: Path) -> list[Path]:
    """Write the page's folder ``out`` (new, or an empty folder): ``write_bundle(folder)`` writes
    the bundle into it (``export_bundle`` or ``copy_bundle``), then the page's files and
    ONNX Runtime Web's (from ``ort_dir``, ``find_ort_web``). Built in a hidden folder beside
    ``out`` and renamed into place: nothing is left behind when it fails. Returns the
    files written, as paths under ``out``.

    Raises ``ConfigError`` for an ``out`` that is a file or a folder with files in it (and
    what ``write_bundle`` raises); ``OutputError`` naming a file that cannot be written."""
    check_site_out(out)
    building = out.parent / f".{out.name}.building-{os.getpid()}"
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            building.mkdir()
        except OSError as error:
            raise OutputError.of(building, error) from None
        write_bundle(building)
        page = resources.files("tagger") / "page"
        try:
            for name in PAGE_FILES:
                (building / name).write_bytes((page / name).read_bytes())
            (building / ORT_DIR).mkdir()
            for name in ORT_FILES:
                shutil.copyfile(ort_dir / name, building / ORT_DIR / name)
            version = ort_version(ort_dir) or "unknown"
            (building / ORT_DIR / "README.txt").write_text(
                f"ONNX Runtime Web {version} (the npm package onnxruntime-web, MIT License, "
                f"Microsoft), copied by tagger export --format web from {ort_dir}.\n"
            )
        except OSError as error:
            raise OutputError.of(Path(error.filename or building), error) from None
        try:
            building.rename(out)
        except OSError as error:
            raise OutputError.of(out, error) from None
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return sorted(path for path in out.rglob("*") if path.is_file())
