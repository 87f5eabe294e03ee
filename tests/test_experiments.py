"""Study configs (conf/experiment/) compose, and a study script runs and reports end to end."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import REPO_ROOT, TINY, compose_config

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))
STUDIES = sorted((REPO_ROOT / "experiments").glob("*.sh"))
STUDIES = [path for path in STUDIES if path.name != "study.sh"]


def run_study(script: Path, out: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *overrides],
        cwd=out.parent,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OUT": str(out), **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def bare_python_env(root: Path) -> dict[str, str]:
    """An environment whose ``python``/``python3`` (and ``$VIRTUAL_ENV``) are a fresh venv
    without tagger's packages, first on the PATH, and with no ``PYTHON`` set."""
    bare = root / "bare-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(bare)
    probe = "import importlib.util as u; print(u.find_spec('torch'))"
    found = subprocess.run(
        [str(bare / "bin" / "python3"), "-c", probe], capture_output=True, text=True
    )
    assert found.stdout.strip() == "None", "the bare venv must not see torch"
    env = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    env.update(PATH=f"{bare / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(bare))
    if not (REPO_ROOT / ".venv" / "bin" / "python").exists():  # installed with VENV=...
        env.setdefault("VENV", sys.prefix)
    return env


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes_and_builds_its_network(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", tmp_path, [f"experiment={name}"])
    net = instantiate(cfg.model.net, num_tags=5)
    assert sum(p.numel() for p in net.parameters()) > 0
    if name.startswith("table1_"):
        *_, length, stride = name.split("_")
        assert (cfg.conv.length, cfg.conv.stride) == (int(length), int(stride))
        assert ("Spectrogram" in cfg.model.net._target_) == ("spectrogram" in name)
    if name.startswith("nonlinearity_"):
        assert cfg.model.net.nonlinearity == name.removeprefix("nonlinearity_")
    if name.startswith("pooling_") and name != "pooling_none":
        mode, size = name.removeprefix("pooling_").split("_")
        assert (cfg.model.net.feature_pool, cfg.model.net.feature_pool_size) == (mode, int(size))
    if name.startswith("optimizer_"):
        assert cfg.optimizer._target_.lower().endswith(name.removeprefix("optimizer_"))
    if name.startswith("augment_"):
        assert (cfg.augment.mixup.p > 0) == (name == "augment_standard")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("coursework", (12000, 10, 34950, 5, 0.1135)), ("dieleman", (16000, 9, 48000, 20, 0.1135))],
)
def test_the_two_settings(setting: str, expected: tuple, tmp_path: Path) -> None:
    overrides = ["experiment=table1_raw_256_256", f"experiment/setting={setting}"]
    cfg = compose_config("train", tmp_path, overrides)
    data, trainer = cfg.data, cfg.trainer
    found = (data.sample_rate, data.n_subclips, data.subclip_len, trainer.max_epochs)
    assert (*found, cfg.optimizer.lr) == expected


def test_a_config_keeps_a_study_settings_window_only_where_its_model_needs_its_own(
    tmp_path: Path,
) -> None:
    cfg = compose_config("train", tmp_path, ["experiment=model_samplecnn"])
    assert (cfg.data.sample_rate, cfg.data.subclip_len, cfg.data.n_subclips) == (12000, 59049, 5)


@pytest.mark.parametrize("script", STUDIES, ids=lambda path: path.stem)
def test_every_study_sweeps_existing_configs(script: Path, tmp_path: Path) -> None:
    stubs = tmp_path / "bin"  # a dry run: `echo` for python, a `tagger` that does nothing
    stubs.mkdir()
    (stubs / "tagger").write_text("#!/bin/sh\n")
    (stubs / "tagger").chmod(0o755)
    path = f"{stubs}{os.pathsep}{os.environ['PATH']}"
    result = run_study(script, tmp_path / "sweep", "data=coursework", PYTHON="echo", PATH=path)
    assert result.returncode == 0, result.stderr
    command = result.stdout.splitlines()[0].split()  # what the script hands to train.py
    assert command[1] == "-m" and "seed=1,2,3,4,5" in command and "data=coursework" in command
    experiments = next(arg for arg in command if arg.startswith("experiment="))
    for name in experiments.removeprefix("experiment=").split(","):
        assert name in EXPERIMENTS, f"{script.name} sweeps {name}, which has no config"


@pytest.mark.slow
def test_optimizer_study_runs_and_reports_one_row_per_config(tmp_path: Path) -> None:
    """``python``/``python3`` on the PATH lack tagger's packages: the study finds the
    project's environment by itself (the repository's .venv, or $VENV)."""
    out = tmp_path / "optimizers"
    env = bare_python_env(tmp_path)
    script = REPO_ROOT / "experiments" / "optimizers.sh"
    result = run_study(script, out, *TINY, SEEDS="1", QUICK="1", **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(tmp_path / "bare-venv") not in result.stderr.splitlines()[0]
    with open(out / "report.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [row["config"] for row in rows] == [
        "experiment=optimizer_sgd",
        "experiment=optimizer_adam",
        "experiment=optimizer_adamw",
    ]
    assert all(row["completed"] == "1" and float(row["test_auc_mean"]) > 0 for row in rows)
    assert all(row["published_auc"] == "" for row in rows)  # the built-in data is not MTAT
    markdown = (out / "report.md").read_text()
    assert "| published |" in markdown
    assert sum("| n/a | n/a |" in line for line in markdown.splitlines()) == 3


@pytest.mark.slow
def test_augment_study_runs_and_reports_augmentation_off_and_on(tmp_path: Path) -> None:
    out = tmp_path / "augment"
    script = REPO_ROOT / "experiments" / "augment.sh"
    result = run_study(script, out, *TINY, "test=false", SEEDS="1", QUICK="1")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "report.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [row["config"] for row in rows] == [
        "experiment=augment_none",
        "experiment=augment_standard",
    ]
    assert all(row["completed"] == "1" and float(row["test_auc_mean"]) > 0 for row in rows)
    assert rows[0]["train_auc_mean"] != rows[1]["train_auc_mean"]


def test_a_study_without_an_environment_says_how_to_name_one(tmp_path: Path) -> None:
    """A copy of the study scripts outside any environment: one line, exit 2, no traceback."""
    shutil.copytree(REPO_ROOT / "experiments", tmp_path / "repo" / "experiments")
    env = bare_python_env(tmp_path)
    env.pop("VENV", None)
    result = run_study(tmp_path / "repo" / "experiments" / "optimizers.sh", tmp_path / "out", **env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "set PYTHON=/path/to/env/bin/python" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
