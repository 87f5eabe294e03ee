"""Shared fixtures: compose the real Hydra configs in-process, with tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tagger.cli.hydra_setup import compose_run_config as compose_config

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Small synthetic data and short runs: seconds per training run on 2 CPU cores.
TINY = [
    "data.train_clips=60",
    "data.val_clips=30",
    "data.test_clips=30",
    "data.n_subclips=2",
    "data.subclip_len=4096",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
]


@pytest.fixture
def train_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``train_config(*overrides, run="name")``: a tiny training config writing to tmp_path/run."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config("train", tmp_path / run, [*TINY, *overrides])

    return make


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the repository root files, with outputs under ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
