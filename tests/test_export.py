"""``tagger export``: torch.export (pt2), ONNX and TorchScript models give the checkpoint's
probabilities; TorchScript, deprecated, says so in one line (bundles: tests/test_bundle.py)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from tagger.cli import export as export_cli
from tagger.cli import main as cli_main
from tagger.export import EXTRA_FILE, TORCHSCRIPT_NOTE
from tagger.module import load_trained
from tests.conftest import TINY, compose_config

#: ONNX (its exporter takes seconds) and a second model's training run in `make test-all`.
ONNX = pytest.param("onnx", marks=pytest.mark.slow)
#: torch.jit.load's own deprecation warning, in the tests that load a TorchScript file
JIT_LOAD_DEPRECATED = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated")


@pytest.fixture(scope="module", params=["baseline", pytest.param("spectrogram",
                                                                 marks=pytest.mark.slow)])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny baseline (``tiny_checkpoint``), and a tiny spectrogram model."""
    from tagger.train import train

    if request.param == "baseline":
        return request.getfixturevalue("tiny_checkpoint")
    run_dir = tmp_path_factory.mktemp(f"export_{request.param}")
    cfg = compose_config("train", run_dir, [*TINY, f"model={request.param}", "test=false"])
    return Path(train(cfg)["checkpoints"]["last"])


def tagger_export(checkpoint: Path, fmt: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["tagger export", str(checkpoint), "--format", fmt,
                                      "--out", str(out)])  # fmt: skip
    export_cli.main()


@JIT_LOAD_DEPRECATED
@pytest.mark.parametrize("fmt", ["pt2", "torchscript", ONNX])
def test_exports_give_the_checkpoints_probabilities(
    checkpoint: Path, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, config = load_trained(checkpoint)
    window = config["data"]["subclip_len"]
    # a batch and a window count other than the ones the exporter traced with (2, 3)
    audio = torch.randn(4, 5, 1, window, generator=torch.Generator().manual_seed(1)) * 4000.0
    with torch.no_grad():
        expected = model.predict_clips(audio).numpy()

    if fmt == "torchscript":
        tagger_export(checkpoint, "torchscript", tmp_path / "tagger.pt", monkeypatch)
        extra = {EXTRA_FILE: ""}
        scripted = torch.jit.load(str(tmp_path / "tagger.pt"), _extra_files=extra)
        with torch.no_grad():
            np.testing.assert_allclose(scripted(audio).numpy(), expected, atol=1e-4)
        info = json.loads(extra[EXTRA_FILE])
    elif fmt == "pt2":
        tagger_export(checkpoint, "pt2", tmp_path / "tagger.pt2", monkeypatch)
        extra = {EXTRA_FILE: ""}
        program = torch.export.load(tmp_path / "tagger.pt2", extra_files=extra).module()
        with torch.no_grad():
            np.testing.assert_allclose(program(audio).numpy(), expected, atol=1e-4)
            np.testing.assert_allclose(program(audio[:1, :1]).numpy(),
                                       model.predict_clips(audio[:1, :1]).numpy(), atol=1e-4)
        info = json.loads(extra[EXTRA_FILE])
        assert json.loads((tmp_path / "tagger.pt2.json").read_text()) == info
    else:
        tagger_export(checkpoint, "onnx", tmp_path / "tagger.onnx", monkeypatch)
        session = onnxruntime.InferenceSession(str(tmp_path / "tagger.onnx"))
        (probabilities,) = session.run(None, {"audio": audio.numpy()})
        np.testing.assert_allclose(probabilities, expected, atol=1e-4)
        single = session.run(None, {"audio": audio[:1, :1].numpy()})[0]
        np.testing.assert_allclose(single, model.predict_clips(audio[:1, :1]).detach().numpy(),
                                   atol=1e-4)  # fmt: skip
        info = json.loads((tmp_path / "tagger.onnx.json").read_text())

    assert info["tag_names"] == model.tag_names
    assert info["sample_rate"] == config["data"]["sample_rate"]
    assert info["window_length"] == window and info["input_scale"] == 32768.0


def test_torchscript_says_it_is_deprecated_in_one_line(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    tagger_export(tiny_checkpoint, "torchscript", tmp_path / "tagger.pt", monkeypatch)
    captured = capsys.readouterr()
    assert captured.err == f"tagger export: note: {TORCHSCRIPT_NOTE}\n"
    assert "--format pt2" in TORCHSCRIPT_NOTE and (tmp_path / "tagger.pt").is_file()


def test_a_missing_checkpoint_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        tagger_export(tmp_path / "gone.ckpt", "onnx", tmp_path / "m.onnx", monkeypatch)
    assert exit_info.value.code == 2 and "gone.ckpt does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["torchscript", ONNX])
def test_a_full_disk_keeps_the_previous_model_and_leaves_no_partial_file(
    checkpoint: Path, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    out, sidecar = tmp_path / f"tagger.{fmt}", tmp_path / f"tagger.{fmt}.json"
    out.write_bytes(b"the model exported before")
    sidecar.write_text("{}")

    def full(fd: int) -> None:  # the disk fills as the model is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.setattr(sys, "argv", ["tagger", "export", str(checkpoint), "--format", fmt,
                                      "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        f"tagger: error: cannot write {out}: no space left on the device; free space on that "
        "file system or write elsewhere\n"
    )
    assert out.read_bytes() == b"the model exported before" and sidecar.read_text() == "{}"
    assert sorted(tmp_path.iterdir()) == [out, sidecar]  # no temporary, no .partial
