"""Scale-out through Lightning and Hydra plugins: DDP, Optuna sweeps, submitit launchers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tagger.checkpoint_io import read_checkpoint
from tagger.evaluate import evaluate
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli, run_tagger

TRAIN = str(REPO_ROOT / "train.py")


def sweep_metrics(tmp_path: Path) -> tuple[Path, list[dict]]:
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    return sweep, [json.loads(p.read_text()) for p in jobs]


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True], ids=["loader", "on_device"])
def test_two_process_ddp_auc_is_computed_over_all_predictions(
    tmp_path: Path, on_device: bool
) -> None:
    result = run_cli(TRAIN, *TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.max_epochs=2", "test=false", f"data.on_device={on_device}",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs" / "train" / "runs").glob("*/metrics.json")
    ddp = json.loads(metrics_file.read_text())
    assert ddp["global_step"] == 2 * 60 // (2 * 10)  # each process takes half of each epoch
    # The same weights scored by one process over the whole validation split:
    cfg = compose_config(
        "eval", tmp_path / "eval", [f"ckpt_path={ddp['checkpoints']['last']}", "split=val"]
    )
    single = evaluate(cfg)
    assert single["val_clips"] == ddp["val_clips"] == 30
    assert ddp["final"]["val/auc"] == pytest.approx(single["val"]["auc"], abs=1e-6)
    assert ddp["final"]["val/pr_auc"] == pytest.approx(single["val"]["pr_auc"], abs=1e-6)
    # the decision thresholds, fitted on the validation clips of both processes
    stored = read_checkpoint(ddp["checkpoints"]["last"])["thresholds"]
    assert stored["values"] == single["thresholds"]["values"]


@pytest.mark.slow
def test_optuna_search_runs_three_trials_and_keeps_the_best(tmp_path: Path) -> None:
    result = run_cli(TRAIN, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                     "test=false", *TINY, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, jobs = sweep_metrics(tmp_path)
    assert len(jobs) == 3 and all(job["status"] == "completed" for job in jobs)
    learning_rates = {job["config"]["optimizer"]["lr"] for job in jobs}
    assert len(learning_rates) == 3 and all(1e-4 <= lr <= 0.03 for lr in learning_rates)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(job["final"]["val/auc"] for job in jobs))


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job(tmp_path: Path) -> None:
    result = run_cli(TRAIN, "-m", "hydra/launcher=submitit_local", "optimizer=sgd,adamw",
                     "test=false", *TINY, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, jobs = sweep_metrics(tmp_path)
    assert [job["config"]["optimizer"]["_target_"] for job in jobs] == [
        "torch.optim.SGD", "torch.optim.AdamW",
    ]  # fmt: skip
    assert all(job["status"] == "completed" for job in jobs)


def test_slurm_launcher_config_carries_the_cluster_knobs(tmp_path: Path) -> None:
    result = run_tagger("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                        "hydra.launcher.timeout_min=60", "--cfg", "hydra", "--package",
                        "hydra.launcher", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    launcher = yaml.safe_load(result.stdout)  # the hydra.launcher node
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["timeout_min"], launcher["gpus_per_node"]) == (
        "gpu", 60, 1,
    )  # fmt: skip
