"""Gate 4, one writer for every output file: a failed write is one line naming the file.

Every file tagger writes goes through ``tagger.run_files.replacing`` (a temporary beside
the target, fsync, rename). Here the file system fails on purpose, at each step of that
write (creating the temporary, writing it, fsync, rename) with each errno a disk gives
(full, read-only, permission, quota, a file where a folder should be, a device error),
for every writer and every command that writes: the result is one line naming the file
and the reason, exit status 1, no traceback, no temporary left, and the file that was
there before is unchanged. Real failures (a path under a file, a ``/sys`` path, a device
as the target) are tried too.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagger import figures
from tagger.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from tagger.cli import main as cli_main
from tagger.cli.hydra_setup import exit_on_os_error
from tagger.predict import Prediction, Taggram, write_taggram
from tagger.report import write_report
from tagger.robustness import Robustness, write_robustness
from tagger.run_files import OutputError, write_json, write_predictions, write_text
from tests.conftest import TINY

ERRNOS = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.ENOTDIR, errno.EIO]
#: Where a write can fail: creating the temporary, writing it, flushing it, renaming it.
STAGES = ["create", "write", "fsync", "replace"]
#: What each errno is called in the line.
REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "is a file where a folder should be",
    errno.EIO: "input/output error",
}
PREVIOUS = b"the file that was there before\n"
GENERATED = settings(max_examples=30, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


class HalfWritten:
    """A file that takes half of the first write, then fails as a full disk does."""

    def __init__(self, file: Any, error: OSError) -> None:
        self.file, self.error = file, error

    def write(self, data: Any) -> int:
        self.file.write(data[: len(data) // 2])
        raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> HalfWritten:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


@contextlib.contextmanager
def failing(code: int, stage: str, name: str) -> Iterator[None]:
    """Within, writing the file called ``name`` (anywhere) fails with ``OSError(code)`` at
    ``stage``: the temporary beside it cannot be created, is cut short, cannot be flushed
    or cannot be renamed. Every writer is caught: ``open`` and ``io.open`` (pathlib,
    matplotlib, PIL), ``os.fsync`` and ``Path.replace``."""
    marker = f".{name}.tmp-"

    def hit(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and \
            Path(os.fsdecode(path)).name.startswith(marker)  # fmt: skip

    def error(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    with pytest.MonkeyPatch.context() as patch:
        if stage in ("create", "write"):
            real_open = io.open

            def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
                if hit(file) and any(c in mode for c in "wax+"):
                    if stage == "create":
                        raise error(file)
                    return HalfWritten(real_open(file, mode, *args, **kwargs), error(file))
                return real_open(file, mode, *args, **kwargs)

            patch.setattr(io, "open", open_)
            patch.setattr(builtins, "open", open_)
        elif stage == "fsync":
            real_fsync = os.fsync

            def fsync(fd: int) -> None:
                path = os.readlink(f"/proc/self/fd/{fd}")
                if hit(path):
                    raise error(path)
                real_fsync(fd)

            patch.setattr(os, "fsync", fsync)
        else:
            real_replace = pathlib.Path.replace

            def replace(self: Path, target: Any) -> Path:
                if hit(self):
                    raise OSError(code, os.strerror(code), str(self), str(target))
                return real_replace(self, target)

            patch.setattr(pathlib.Path, "replace", replace)
        yield


def temporaries(folder: Path) -> list[Path]:
    """Temporaries of the one writer left anywhere under ``folder``."""
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def assert_one_line(message: str, target: Path, code: int) -> None:
    """``message`` is the gate's line for ``target`` failing with ``code``."""
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"cannot write {target}: "), message
    assert REASONS[code] in message, message


# --- every writer, in-process ------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """A function that writes ``targets`` (names) into a folder."""

    name: str
    targets: tuple[str, ...]
    write: Callable[[Path], object]


TAGS = ["rock", "pop", "jazz"]
RNG = np.random.default_rng(0)
LABELS = (RNG.random((8, 3)) > 0.5).astype(np.float32)
PROBS = RNG.random((8, 3)).astype(np.float32)
ROBUSTNESS_TABLE = pd.DataFrame([
    {"family": "clean", "strength": np.nan, "unit": "", "roc_auc": 0.7, "pr_auc": 0.5},
    {"family": "gain", "strength": -6.0, "unit": "dB", "roc_auc": 0.65, "pr_auc": 0.45},
])  # fmt: skip


def _report(folder: Path) -> object:
    """``write_report`` of a one-job sweep (in a folder of its own) into ``folder``."""
    with tempfile.TemporaryDirectory() as sweep:
        job = Path(sweep) / "0_seed=1"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("task_name: train\n")
        (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text("epoch,step,val/auc\n0,5,0.6\n")
        return write_report([Path(sweep)], folder)


WRITERS = [
    Writer("write_text", ("notes.md",), lambda d: write_text(d / "notes.md", "text\n")),
    Writer("write_json", ("metrics.json",), lambda d: write_json(d / "metrics.json", {"a": 1})),
    Writer("write_predictions", ("predictions.csv",), lambda d: write_predictions(
        d / "predictions.csv", [f"c{i}" for i in range(8)], LABELS, PROBS, TAGS)),
    Writer("checkpoint", ("last.ckpt",), lambda d: AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {"w": torch.ones(3)}, "global_step": 7}, d / "last.ckpt")),
    Writer("per_tag_auc", ("per_tag_auc.png", "per_tag_auc.csv"),
           lambda d: figures.plot_per_tag_auc(TAGS, np.array([0.6, 0.7, np.nan]),
                                              d / "per_tag_auc.png", d / "per_tag_auc.csv")),
    Writer("roc_pr_curves", ("roc_pr.png",),
           lambda d: figures.plot_roc_pr_curves(TAGS, LABELS, PROBS, d / "roc_pr.png")),
    Writer("taggram", ("song.wav.taggram.csv", "song.wav.taggram.png"), lambda d: write_taggram(
        Prediction(Path("song.wav"), 4, PROBS[0], taggram=Taggram(np.arange(4) * 0.5, 0.5,
                                                                    PROBS[:4])),
        TAGS, d, "song.wav", 2)),
    Writer("robustness", ("robustness.csv", "robustness.md", "robustness.png"),
           lambda d: write_robustness(Robustness(Path("m.ckpt"), "test", 8, {"name": "x"},
                                                 "cpu", 0, ROBUSTNESS_TABLE), d)),
    Writer("report", ("curves.png", "report.md", "report.csv"), _report),
]  # fmt: skip


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.name)
def test_every_writer_writes_its_files_and_leaves_no_temporary(
    writer: Writer, tmp_path: Path
) -> None:
    writer.write(tmp_path / "out")
    for name in writer.targets:
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert not temporaries(tmp_path)


@GENERATED
@given(writer=st.sampled_from(WRITERS), code=st.sampled_from(ERRNOS),
       stage=st.sampled_from(STAGES), data=st.data())  # fmt: skip
def test_a_failed_write_is_one_line_and_keeps_the_previous_file(
    writer: Writer, code: int, stage: str, data: st.DataObject, tmp_path_factory: Any
) -> None:
    out = tmp_path_factory.mktemp("out")
    name = data.draw(st.sampled_from(writer.targets), label="failing file")
    for target in writer.targets:
        (out / target).write_bytes(PREVIOUS)
    with failing(code, stage, name), pytest.raises(OutputError) as raised:
        writer.write(out)
    assert_one_line(str(raised.value), out / name, code)
    assert raised.value.errno == code
    assert (out / name).read_bytes() == PREVIOUS
    assert not temporaries(out)


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.name)
def test_a_file_where_the_folder_should_be_is_named(writer: Writer, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file, not a folder")
    with pytest.raises(OutputError) as raised:
        writer.write(tmp_path / "out" / "sub")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"cannot write {tmp_path / 'out' / 'sub'}")
    assert f"{tmp_path / 'out'} is a file where a folder should be" in message


@pytest.mark.parametrize("writer", WRITERS[:4], ids=lambda w: w.name)
def test_a_read_only_place_is_named(writer: Writer) -> None:
    """``/sys`` refuses new files even to root (tests run as root: mode bits do not stop it)."""
    with pytest.raises(OutputError) as raised:
        writer.write(Path("/sys"))
    assert str(raised.value).startswith(f"cannot write /sys/{writer.targets[0]}: ")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("device", ["/dev/full", "/dev/null"])
def test_a_device_is_never_replaced(device: str) -> None:
    """Renaming over ``/dev/full`` would replace the device: the writer refuses first."""
    before = os.stat(device)
    with pytest.raises(OutputError) as raised:
        write_text(device, "text")
    assert str(raised.value) == (f"cannot write {device}: it is there and is not a plain file; "
                                 "move it away or choose another file name")  # fmt: skip
    assert os.stat(device).st_rdev == before.st_rdev
    assert not list(Path("/dev").glob(".*.tmp-*"))


def test_a_failed_checkpoint_says_the_previous_one_is_kept(tmp_path: Path) -> None:
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    with failing(errno.ENOSPC, "fsync", "last.ckpt"), pytest.raises(OutputError) as raised:
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, tmp_path / "last.ckpt")
    assert str(raised.value) == (
        f"cannot write {tmp_path / 'last.ckpt'}: no space left on the device (the previous "
        "checkpoint is kept); free space on that file system or write elsewhere"
    )
    assert read_checkpoint(tmp_path / "last.ckpt")["global_step"] == 1


# --- the report reads a job's .hydra/ files as data ----------------------------------------


def test_a_crafted_sweep_config_is_text_never_resolved_or_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGGER_TEST_SECRET", "s3cret-value")
    marker = tmp_path / "built"
    job = tmp_path / "sweep" / "0_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        "task_name: train\n"
        "leak: ${oc.env:TAGGER_TEST_SECRET}\n"
        f"model: {{_target_: pathlib.Path.touch, self: {marker}}}\n"
    )
    (job / ".hydra" / "overrides.yaml").write_text(
        "- note=${oc.env:TAGGER_TEST_SECRET}\n- +model._target_=builtins.exec\n"
    )
    (tmp_path / "sweep" / "1_job" / ".hydra").mkdir(parents=True)
    (tmp_path / "sweep" / "1_job" / ".hydra" / "config.yaml").write_text(
        "task_name: ${oc.env:TAGGER_TEST_SECRET}\n")  # fmt: skip
    (tmp_path / "sweep" / "1_job" / ".hydra" / "overrides.yaml").write_text("[]\n")
    (tmp_path / "sweep" / "2_job" / ".hydra").mkdir(parents=True)
    (tmp_path / "sweep" / "2_job" / ".hydra" / "config.yaml").write_text("a: [\n")  # not YAML

    report = write_report([tmp_path / "sweep"], tmp_path / "report")
    text = report.markdown.read_text() + report.csv.read_text()
    assert "s3cret-value" not in text and not marker.exists()
    assert "note=${oc.env:TAGGER_TEST_SECRET}" in text  # the override, as plain text
    assert [job.status for job in report.jobs] == ["unfinished", "unreadable"]
    assert f"`{tmp_path / 'sweep' / '2_job' / '.hydra' / 'config.yaml'}` cannot be read" in text


# --- every command, in-process through `tagger COMMAND` -------------------------------------


def run_tagger(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``tagger ARGS`` in this process; its exit status and stderr. The logging handlers
    Hydra sets up (to this test's captured stdout) are removed after."""
    saved_argv, root = sys.argv, logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    sys.argv = ["tagger", *map(str, args)]
    try:
        cli_main.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved_argv
        for handler in root.handlers[:]:
            if handler not in saved_handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return code, capsys.readouterr().err


def assert_failed_in_one_line(code: int, err: str, target: Path, errno_: int | None) -> None:
    """Exit status 1 and one ``tagger...: error:`` line on stderr naming ``target``."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tagger")]
    assert len(lines) == 1, err[-3000:]
    assert code == 1, err[-3000:]
    message = lines[0].partition("error: ")[2]
    if errno_ is None:  # a real failure: the line names the output or a file in it
        assert message.startswith((f"cannot write {target}", str(target))), message
    else:
        assert_one_line(message, target, errno_)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_run: dict) -> Path:
    """A tiny run's checkpoint (its run folder has ``csv/metrics.csv`` and ``.hydra/``): a
    copy of the session's ``tiny_run``."""
    run_dir = tmp_path_factory.mktemp("gate_run") / "run"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("task_name: train\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    return run_dir / Path(tiny_run["checkpoints"]["last"]).relative_to(tiny_run["run_dir"])


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("music") / "song.wav"
    soundfile.write(path, 0.3 * np.sin(np.arange(24_000) / 10.0), 12_000)
    return path


#: A command: its arguments for an output folder, and the files it writes there.
Command = Callable[[Path, Path, Path], list[str | Path]]
COMMANDS: dict[str, tuple[Command, tuple[str, ...]]] = {
    "train": (lambda ckpt, song, out: ["train", *TINY, "test=false", "+trainer.limit_val_batches=1",
                                       "+trainer.limit_train_batches=2", f"hydra.run.dir={out}"],
              ("metrics.json", "checkpoints/last.ckpt")),
    "eval": (lambda ckpt, song, out: ["eval", f"ckpt_path={ckpt}", f"hydra.run.dir={out}"],
             ("metrics.json", "predictions.csv", "per_tag_auc.png", "per_tag_auc.csv",
              "clips.md", "roc_pr_curves.png", "curves.png")),
    "export torchscript": (lambda ckpt, song, out: ["export", ckpt, "--format", "torchscript",
                                                    "--out", out / "m.pt"],
                           ("m.pt", "m.pt.json")),
    "export onnx": (lambda ckpt, song, out: ["export", ckpt, "--format", "onnx",
                                             "--out", out / "m.onnx"],
                    ("m.onnx", "m.onnx.json")),
    "export pt2": (lambda ckpt, song, out: ["export", ckpt, "--format", "pt2",
                                            "--out", out / "m.pt2"],
                   ("m.pt2", "m.pt2.json")),
    "export bundle": (lambda ckpt, song, out: ["export", ckpt, "--format", "bundle",
                                               "--out", out],
                      ("model.onnx", "MODEL_CARD.md", "tagger.json")),
    "embed": (lambda ckpt, song, out: ["embed", ckpt, song, "--out", out / "emb"],
              ("emb.npy", "emb.csv")),
    "report": (lambda ckpt, song, out: ["report", ckpt.parent.parent, "--out", out],
               ("curves.png", "report.md", "report.csv")),
    "predict --taggram": (lambda ckpt, song, out: ["predict", ckpt, song, "--taggram", out],
                          ("song.wav.taggram.csv", "song.wav.taggram.png")),
    "robustness": (lambda ckpt, song, out: ["robustness", ckpt, "--families", "gain",
                                            "--gains", "-6", "--out", out],
                   ("robustness.csv", "robustness.md", "robustness.png")),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_writes_its_files(
    command: str, trained: Path, song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments, targets = COMMANDS[command]
    code, err = run_tagger(*arguments(trained, song, tmp_path / "out"), capsys=capsys)
    assert code == 0, err[-3000:]
    for name in targets:
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert not temporaries(tmp_path)


@pytest.mark.slow
@settings(max_examples=14, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(command=st.sampled_from(list(COMMANDS)), code=st.sampled_from(ERRNOS),
       stage=st.sampled_from(STAGES), data=st.data())  # fmt: skip
def test_a_command_whose_write_fails_says_so_in_one_line_and_exits_1(
    command: str, code: int, stage: str, data: st.DataObject, trained: Path, song: Path,
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    arguments, targets = COMMANDS[command]
    name = data.draw(st.sampled_from(targets), label="failing file")
    out = tmp_path_factory.mktemp("out")
    target = out / name
    new = command in ("train", "eval", "export bundle")  # a new folder (a bundle: or empty)
    if not new:  # other outputs may be there
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PREVIOUS)
    capsys.readouterr()
    with failing(code, stage, target.name):
        status, err = run_tagger(*arguments(trained, song, out), capsys=capsys)
    assert_failed_in_one_line(status, err, target, code)
    if new:
        assert not target.exists()
    else:
        assert target.read_bytes() == PREVIOUS
    assert not temporaries(out)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("place", ["under a file", "/sys"])
def test_a_command_writing_where_it_cannot_says_so_in_one_line(
    command: str, place: str, trained: Path, song: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Real failures, no fault injected: the output folder is under a plain file
    (ENOTDIR), or in ``/sys``, where even root cannot create anything."""
    if place == "/sys":
        out = Path("/sys/tagger-gate-test")
    else:
        (tmp_path / "file").write_text("a file, not a folder")
        out = tmp_path / "file" / "out"
    arguments, _ = COMMANDS[command]
    status, err = run_tagger(*arguments(trained, song, out), capsys=capsys)
    assert_failed_in_one_line(status, err, out, None)
    if place != "/sys":
        assert f"{tmp_path / 'file'} is a file where a folder should be" in err
    assert not temporaries(tmp_path)


# --- the command line's handler --------------------------------------------------------------


def test_the_handler_finds_the_os_error_a_library_wrapped(capsys: pytest.CaptureFixture) -> None:
    """``logging.config`` and Hydra's ``instantiate`` wrap an ``OSError`` in their own
    errors; the line still names the file. An error with no ``OSError`` behind it, or one
    raised ``from None``, is left alone."""
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/r/train.log")
    wrapped = ValueError("Unable to configure handler 'file'")
    wrapped.__cause__ = full
    with pytest.raises(SystemExit) as stop:
        exit_on_os_error(wrapped, "paths.log_dir=DIR")
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        "tagger: error: /runs/r/train.log: no space left on the device; free space on that "
        "file system or write elsewhere (paths.log_dir=DIR)\n"
    )
    unrelated = KeyError("x")
    unrelated.__context__, unrelated.__suppress_context__ = full, True
    for error in (ValueError("no file behind it"), unrelated):
        exit_on_os_error(error)  # returns: not a file-system failure
    assert capsys.readouterr().err == ""
