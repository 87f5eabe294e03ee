"""The command lines of the README, run as a user runs them (subprocesses, in `make
test-all`); their refusals of bad overrides and missing files in this process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TINY, run_cli, run_tagger

TRAIN = str(REPO_ROOT / "train.py")
# tiny data, with sub-clips long enough for the 512/512 and 1024/256 geometries below
SMALL = [o for o in TINY if not o.startswith("data.subclip_len")] + ["data.subclip_len=8192"]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_shorthand_stride_override_runs_as_written(tmp_path: Path) -> None:
    result = run_cli(TRAIN, "model=baseline", "stride=512", "trainer.max_epochs=1", *SMALL,
                     cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    (metrics_file,) = (tmp_path / "outputs" / "train" / "runs").glob("*/metrics.json")
    conv = json.loads(metrics_file.read_text())["config"]["conv"]
    assert conv == {"length": 512, "stride": 512}  # the length follows the stride


@pytest.mark.slow
def test_sweep_over_first_layer_lengths(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(TRAIN, "-m", "conv.length=256,512,1024", "trainer.max_epochs=1", *SMALL,
                     cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [job.split(",")[0] for job in jobs] == [
        "0_conv.length=256", "1_conv.length=512", "2_conv.length=1024",
    ]  # fmt: skip
    for job, length in zip(jobs, (256, 512, 1024), strict=True):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["config"]["conv"] == {"length": length, "stride": 256}
        events = EventAccumulator(str(sweep / job / "tensorboard")).Reload()
        assert len(events.Scalars("train/loss")) == metrics["global_step"]  # one per step
        assert len(events.Scalars("val/auc")) == 1  # one per epoch

    # a job's checkpoint path holds '=' and ',' (its overrides); it works unquoted
    last = sweep / jobs[2] / "checkpoints" / "last.ckpt"
    result = run_cli(str(REPO_ROOT / "eval.py"), f"ckpt_path={last}", "split=val", cwd=tmp_path)
    assert_ok(result)
    (evaluated,) = (tmp_path / "outputs" / "eval" / "runs").glob("*/metrics.json")
    assert json.loads(evaluated.read_text())["config"]["conv"]["length"] == 1024


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    command = [sys.executable, TRAIN, "-m", "debug=fast", *SMALL]
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    sweeps = list((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stride=2048", "length=1024"], "stride 2048 must be between 1 and its length 1024"),
        (["model=nope"], "unknown model 'nope' in 'model=nope'; choose one of: baseline"),
        (["-m", "optimizer=sgd,adamx"], "unknown optimizer 'adamx'"),
        (["data.subclip_len=1000"], "too short"),
        (["model.aggregation=max"], "model.aggregation must be one of"),
        (["stride=256", "length=abc"], "conv.length must be a whole number of samples"),
        (["length=-5"], "conv.length must be a positive number of samples, not -5 (set length=N"),
        (["length=256", "stride=0"], "conv.stride must be a positive number of samples, not 0"),
        (["data.batch_size=0"], "data.batch_size must be a positive whole number (clips per"),
        (["data.n_subclips=0"], "data.n_subclips must be a positive whole number (windows per"),
        (["seed=abc"], "seed must be a whole number (or null: not seeded), not 'abc'"),
        (["optimizer.lr=-1"], "optimizer.lr must be a positive number, not -1"),
        (["trainer.max_epochs=-1"], "trainer.max_epochs must be a positive whole number, not -1"),
        (["trainer.max_epochs=null", "scheduler=cosine"], "scheduler.T_max must be a positive"),
    ],
)
def test_bad_override_fails_at_start_up_in_one_line(tmp_path, overrides, message) -> None:
    result = run_tagger("train", *overrides, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tagger: error: ")
    assert not list(tmp_path.glob("outputs/train/runs/*/checkpoints"))


def test_eval_without_a_checkpoint_names_the_file(tmp_path: Path) -> None:
    result = run_tagger("eval", "ckpt_path=missing.ckpt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tagger: error: checkpoint missing.ckpt does not exist (pass ckpt_path=PATH/TO/FILE.ckpt)"
    )


def test_tagger_command_lists_its_commands() -> None:
    result = run_tagger("--help")
    assert result.returncode == 0 and "train" in result.stdout and "eval" in result.stdout


@pytest.mark.slow
def test_quickstart_reaches_the_readme_auc(tmp_path: Path) -> None:
    """README's main command, default config: validation macro ROC-AUC of at least 0.90."""
    result = run_cli(TRAIN, cwd=tmp_path, timeout=600)
    assert_ok(result)
    (metrics_file,) = (tmp_path / "outputs" / "train" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["final"]["val/auc"] >= 0.90
    assert metrics["dataset"]["name"] == "synthetic"
    assert f"final val/auc {metrics['final']['val/auc']:.4f}" in result.stdout + result.stderr
