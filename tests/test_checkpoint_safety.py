"""Checkpoints are data, never code: every command loads them weights-only and refuses the rest
in one line; a bad checkpoint never gets as far as a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import REPO_ROOT, TINY, run_cli, run_tagger


class Payload:
    """Unpickled by ``torch.load(weights_only=False)``, it creates ``marker``: code in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    """The last.ckpt of a real one-epoch run."""
    return tiny_checkpoint


def commands(ckpt: Path, tmp_path: Path) -> dict[str, list[str]]:
    """eval.py, tagger predict and tagger export, each given ``ckpt``."""
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros(12000, dtype=np.float32), 12000)
    return {
        "eval": [str(REPO_ROOT / "eval.py"), f"ckpt_path={ckpt}"],
        "predict": ["-m", "tagger", "predict", str(ckpt), str(song)],
        "export": ["-m", "tagger", "export", str(ckpt), "--format", "torchscript",
                   "--out", str(tmp_path / "m.pt")],
    }  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert "error: " in line
    return line


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(
    checkpoint: Path, tmp_path: Path, command: str
) -> None:
    contents = torch.load(checkpoint, weights_only=True)
    contents["hyper_parameters"]["payload"] = Payload(tmp_path / "marker")
    evil = tmp_path / "evil.ckpt"
    torch.save(contents, evil)

    result = run_cli(*commands(evil, tmp_path)[command], cwd=tmp_path)
    line = one_error_line(result)
    assert f"checkpoint {evil} holds objects other than tensors" in line
    assert "tagger does not execute code from checkpoints" in line
    assert result.returncode == 2
    assert not (tmp_path / "marker").exists()

    torch.load(evil, weights_only=False)  # the payload is live: an unsafe load runs it
    assert (tmp_path / "marker").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_checkpoint_without_hyperparameters_is_refused_with_exit_2(
    checkpoint: Path, tmp_path: Path, command: str
) -> None:
    contents = torch.load(checkpoint, weights_only=True)
    contents["hyper_parameters"] = {}
    empty = tmp_path / "empty.ckpt"
    torch.save(contents, empty)
    result = run_cli(*commands(empty, tmp_path)[command], cwd=tmp_path)
    assert "is not a checkpoint written by tagger's train.py" in one_error_line(result)
    assert result.returncode == 2


@pytest.mark.slow
def test_real_checkpoints_still_load_in_every_command(checkpoint: Path, tmp_path: Path) -> None:
    for name, args in commands(checkpoint, tmp_path).items():
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, (name, result.stderr[-2000:])
    assert (tmp_path / "m.pt").is_file()
    assert list(tmp_path.glob("outputs/eval/runs/*/metrics.json"))


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (np.random.default_rng(0).bytes(4096), "cannot be read: not a PyTorch checkpoint"),
        (b"PK\x03\x04" + b"\x00" * 200, "cannot be read (damaged?)"),
    ],
    ids=["random_bytes", "truncated_zip"],
)
def test_train_refuses_an_unreadable_checkpoint_before_training(
    tmp_path: Path, contents: bytes, message: str
) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(contents)
    result = run_tagger("train", f"ckpt_path={bad}", *TINY, cwd=tmp_path)
    line = one_error_line(result)
    assert line.startswith(f"tagger: error: checkpoint {bad} ") and message in line
    assert not list(tmp_path.glob("outputs/train/runs/*/checkpoints"))
