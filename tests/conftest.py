"""Shared fixtures: compose the real Hydra configs in-process, with tiny data; one tiny
trained checkpoint per session; the ``tagger`` command in this process or in a real one.

Two tiers (``make test``, ``make test-all``): a test is marked ``slow`` when it trains more
than the tiny model, or takes more than about 2 s of CPU, or starts a process (``run_cli``)
because the process is the point (signals, installs, the README's commands, no traceback
from a real interpreter). Every other test runs commands in this process (``run_tagger``)
and shares ``tiny_checkpoint`` rather than training its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tagger.cli.hydra_setup import compose_run_config as compose_config

REPO_ROOT = Path(__file__).resolve().parents[1]

# One CPU thread in this process and every process a test starts (they inherit the variable).
# With several threads, PyTorch's CPU kernels can give results that differ in the last bits
# from one process to the next (measured: the first AdamW step of the same run, in about 1
# process in 12 on a loaded 2-core machine), and training amplifies that; tests that compare
# a resumed or restarted run with one never stopped need every process to compute alike.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

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
    "~callbacks.dashboards",  # its figures would double a tiny run; tests/test_dashboards.py
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


def run_tagger(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``tagger ARGS`` (``train``/``eval`` as ``train.py``/``eval.py``) in this process, as
    ``run_cli`` would run it in another: the exit status (0 if it returned), stdout, stderr.

    ``cwd`` is where relative outputs go (``outputs/``). An exception the command does not
    turn into an exit propagates (a real process would print its traceback). As in a new
    process the root logger starts with no handlers; those Hydra sets up are removed after,
    and the root logger's handlers and level restored.
    """
    from tagger.cli.main import main as tagger_main

    argv = ["tagger", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, root = sys.argv, logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers[:] = []
    saved_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "0"
    sys.argv = argv
    code = 0
    try:
        with contextlib.ExitStack() as stack:
            if cwd is not None:
                stack.enter_context(contextlib.chdir(cwd))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
            try:
                tagger_main()
            except SystemExit as stop:
                if isinstance(stop.code, str):  # as the interpreter does: the text, status 1
                    print(stop.code, file=sys.stderr)
                code = 1 if isinstance(stop.code, str) else stop.code or 0
    finally:
        sys.argv = saved_argv
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """After each test, the root logger's level as before and no handler the test added
    (pytest's aside): a command run in this process leaves Hydra's handlers (to a captured
    stream, a run's log file) behind, which a later test's logging would write to closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:  # pytest's own capture handlers change with the phase
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The summary of one tiny training (``TINY``, no test pass), trained once per session
    for every test that only needs a real run or checkpoint (eval, predict, export,
    robustness, targets, the checkpoint gates). Read it only: a test that changes the run
    folder or the checkpoint works on a copy (``shutil.copytree``/``copy`` to tmp_path).
    The checkpoint's bytes are checked unchanged at the end of the session."""
    from tagger.train import train

    summary = train(compose_config("train", tmp_path_factory.mktemp("tiny_run"),
                                   [*TINY, "test=false"]))  # fmt: skip
    last = Path(summary["checkpoints"]["last"])
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    yield summary
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest, f"a test changed {last}"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run: dict) -> Path:
    """``last.ckpt`` of ``tiny_run`` (read only; copy it to change it)."""
    return Path(tiny_run["checkpoints"]["last"])
