"""``tagger robustness``: the clean row is eval.py's AUC, strong noise lowers it, the files."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch

from tagger.cli import robustness as robustness_cli
from tagger.errors import ConfigError
from tagger.evaluate import evaluate
from tagger.robustness import FAMILIES, perturb_clips, rewindow, robustness
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline that has learned something (clean test ROC-AUC about 0.75), in 20 s."""
    from tagger.train import train

    run_dir = tmp_path_factory.mktemp("robustness")
    cfg = compose_config("train", run_dir, [*TINY, "data.train_clips=300", "data.test_clips=60",
                                            "trainer.max_epochs=5", "test=false"])  # fmt: skip
    return Path(train(cfg)["checkpoints"]["last"])


def tagger_robustness(*args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["tagger robustness", *map(str, args)])
    robustness_cli.main()


@pytest.mark.slow
def test_clean_row_is_evals_auc_and_strong_noise_lowers_it(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    tagger_robustness(checkpoint, "--out", tmp_path / "robustness", monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "robustness" / "robustness.csv")
    expected = [("clean", None)] + [(f, s) for f, family in FAMILIES.items()
                                    for s in family.strengths]  # fmt: skip
    assert [(f, None if pd.isna(s) else s) for f, s in zip(table.family, table.strength,
                                                           strict=True)] == expected  # fmt: skip
    assert table.roc_auc.between(0, 1).all() and table.pr_auc.between(0, 1).all()

    summary = evaluate(compose_config("eval", tmp_path / "eval",
                                      [f"ckpt_path={checkpoint}", "split=test"]))  # fmt: skip
    clean = table.iloc[0]
    assert clean.roc_auc == pytest.approx(summary["test"]["auc"], abs=1e-6)
    assert clean.pr_auc == pytest.approx(summary["test"]["pr_auc"], abs=1e-6)
    assert clean.roc_auc > 0.65  # the model has learned something that noise can take away
    noisiest = table[(table.family == "noise") & (table.strength == 0.0)].iloc[0]
    assert noisiest.roc_auc < clean.roc_auc - 0.01

    markdown = (tmp_path / "robustness" / "robustness.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[1] == f"| clean | | {clean.roc_auc:.4f} | | {clean.pr_auc:.4f} | |"
    assert f"| white noise | 0 SNR dB | {noisiest.roc_auc:.4f} |" in markdown
    assert len(rows) == 1 + len(expected) and markdown in printed
    image = matplotlib.image.imread(tmp_path / "robustness" / "robustness.png")
    assert image.ndim == 3 and image.shape[1] > 2 * image.shape[0]  # four panels in a row


def test_identity_strengths_and_seeded_noise_repeat(tiny_checkpoint: Path) -> None:
    """A 0 dB gain goes through the joining and re-windowing of clips and changes nothing;
    noise with the same seed gives the same AUC, another seed another one (any trained
    model: the tiny one)."""
    checkpoint = tiny_checkpoint
    table = robustness(checkpoint, strengths={"gain": [0.0], "noise": [0.0]}, progress=False).table
    clean, unchanged, noisy = table.itertuples()
    assert unchanged.roc_auc == pytest.approx(clean.roc_auc, abs=1e-6)
    again = robustness(checkpoint, strengths={"noise": [0.0]}, progress=False).table.iloc[1]
    other = robustness(checkpoint, strengths={"noise": [0.0]}, seed=1, progress=False).table
    assert again.roc_auc == noisy.roc_auc and other.iloc[1].roc_auc != noisy.roc_auc


def test_a_time_stretch_rewindows_each_clip() -> None:
    audio = torch.arange(3 * 2 * 64, dtype=torch.int16).reshape(3, 2, 1, 64)
    stretch = FAMILIES["time_stretch"]
    generator = torch.Generator()
    assert perturb_clips(audio, stretch, 0.5, generator).shape == (3, 4, 1, 64)  # 256 samples
    assert perturb_clips(audio, stretch, 0.8, generator).shape == (3, 2, 1, 64)  # 160: 2 whole
    assert perturb_clips(audio, stretch, 1.2, generator).shape == (3, 1, 1, 64)  # 107: 1 whole
    assert perturb_clips(audio, stretch, 3.0, generator).shape == (3, 1, 1, 64)  # 43: padded
    # the windows of a clip are its consecutive samples, each clip on its own
    joined = perturb_clips(audio, FAMILIES["gain"], 0.0, generator)
    assert joined.dtype == torch.float32 and torch.equal(joined, audio.float())
    short = rewindow(torch.ones(2, 1, 40), 64)
    assert short.shape == (2, 1, 1, 64) and short.sum() == 80 and short[..., 40:].abs().sum() == 0


def test_bad_checkpoint_and_family_exit_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tagger_robustness(tmp_path / "gone.ckpt", "--out", tmp_path, monkeypatch=monkeypatch)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "gone.ckpt does not exist" in line
    with pytest.raises(SystemExit) as exit_info:
        tagger_robustness(tmp_path / "gone.ckpt", "--rates", "0", monkeypatch=monkeypatch)
    assert exit_info.value.code == 2
    assert "argument --rates: must be a number from 0.25" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("family", "strength", "message"),
    [
        ("gain", float("nan"), "gain strength must be a number from -100 to 100 (dB), not nan"),
        ("pitch_shift", 100.0, "pitch_shift strength must be a number from -24 to 24"),
        ("time_stretch", 0.0, "time_stretch strength must be a number from 0.25 to 4"),
        ("noise", float("inf"), "noise strength must be a number from -30 to 100"),
    ],
)
def test_strengths_outside_a_familys_limits_are_refused_before_anything_loads(
    tmp_path: Path, family: str, strength: float, message: str
) -> None:
    """The library checks what the flags check (a NaN gain was scored as a finite AUC)."""
    with pytest.raises(ConfigError) as error:
        robustness(tmp_path / "never-read.ckpt", strengths={family: [1.0, strength]})
    assert str(error.value).startswith(message)


def test_data_overrides_pass_the_settings_schema(tiny_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.num_workers must be a whole number from 0"):
        robustness(tiny_checkpoint, strengths={}, data_overrides={"num_workers": -1},
                   progress=False)  # fmt: skip
