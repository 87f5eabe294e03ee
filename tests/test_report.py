"""``tagger report``: sweeps into a table, mean ± std over seeds, failures shown."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from tagger.published import published_auc
from tagger.report import write_report
from tests.conftest import REPO_ROOT, TINY, run_cli

TRAIN = str(REPO_ROOT / "train.py")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[Path, Path]:
    """A 2 optimizers x 2 seeds sweep, and a second sweep with a failed and an unfinished job."""
    cwd = tmp_path_factory.mktemp("sweeps")
    for args in (["optimizer=sgd,adamw", "seed=1,2"], ["length=1024", "stride=2048"]):
        result = run_cli(TRAIN, "-m", *args, "test=false", *TINY, cwd=cwd)
        assert result.returncode == 0, result.stderr[-2000:]
    first, second = sorted((cwd / "outputs" / "train" / "multiruns").iterdir())
    unfinished = second / "9_killed"
    shutil.copytree(next(first.glob("0_*")) / ".hydra", unfinished / ".hydra")
    return first, second


def test_report_holds_mean_and_std_over_seeds(sweeps, tmp_path) -> None:
    first, _ = sweeps
    write_report([first], tmp_path)
    with (tmp_path / "report.csv").open() as f:
        rows = {row["config"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"optimizer=sgd", "optimizer=adamw"}
    for name, row in rows.items():
        jobs = [json.loads(p.read_text()) for p in first.glob(f"*{name},*/metrics.json")]
        assert sorted(job["config"]["seed"] for job in jobs) == [1, 2]
        for column, values in (
            ("test_auc", [job["final"]["val/auc"] for job in jobs]),  # test=false: val
            ("train_auc", [job["final"]["train/auc"] for job in jobs]),
            ("train_pr_auc", [job["final"]["train/pr_auc"] for job in jobs]),
        ):
            assert float(row[f"{column}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{column}_std"]) == pytest.approx(statistics.stdev(values))
        assert row["completed"] == "2" and row["held_out_split"] == "val"
        assert row["published_auc"] == ""  # synthetic data: nothing to compare with


def test_failed_and_unfinished_jobs_are_shown_and_do_not_stop_it(sweeps, tmp_path) -> None:
    markdown, _, rows = write_report(list(sweeps), tmp_path)
    assert {row.label for row in rows} == {
        "optimizer=sgd", "optimizer=adamw", "length=1024 stride=2048",
    }  # fmt: skip
    text = markdown.read_text()
    assert "| optimizer=sgd | 2/3 done, 1 unfinished |" in text
    assert "| length=1024 stride=2048 | 0/1 done, 1 failed | – |" in text
    assert "(failed): first-layer stride 2048 must be between 1 and its length 1024" in text
    assert "9_killed` (unfinished): no metrics.json" in text
    assert text.count("| n/a | n/a |") == 3


def test_report_of_no_jobs_is_a_clear_error(tmp_path) -> None:
    result = run_cli("-c", "from tagger.cli.report import main; main()", str(tmp_path),
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "no training jobs (directories with .hydra/) under" in result.stderr


def test_published_figures_follow_the_protocol() -> None:
    mtat = {"real_music": True, "tag_set": "merged50", "split": "coursework"}
    config = {
        "model": {"net": {"_target_": "tagger.models.dieleman.DielemanCNN"}},
        "conv": {"length": 256, "stride": 256},
        "optimizer": {"_target_": "torch.optim.SGD"},
    }
    assert published_auc(config, mtat) == (0.7873, "replication paper, Table I")
    dieleman = {"real_music": True, "tag_set": "top50", "split": "dieleman"}
    assert published_auc(config, dieleman)[0] == 0.8487
    assert published_auc(config, {**mtat, "real_music": False}) is None
    adamw = {**config, "optimizer": {"_target_": "torch.optim.AdamW"}}
    assert published_auc(adamw, mtat) is None  # the paper gives no AdamW table

    def ablation(**net: object) -> dict:
        target = "tagger.models.dieleman.DielemanCNN"
        return {**config, "conv": {"length": 1024, "stride": 1024},
                "model": {"net": {"_target_": target, **net}}}  # fmt: skip

    assert published_auc(ablation(nonlinearity="log1p_sq"), dieleman)[0] == 0.7508
    assert published_auc(ablation(feature_pool="max", feature_pool_size=4), dieleman)[0] == 0.8280
    assert published_auc(ablation(feature_pool="l2", feature_pool_size=8), dieleman) is None
    assert published_auc(ablation(), dieleman)[0] == 0.8366  # Table 1, 1024/1024

    def network(target: str) -> dict:
        return {**config, "model": {"net": {"_target_": f"tagger.models.{target}"}}}

    spectrogram = network("spectrogram.SpectrogramCNN")
    assert published_auc(spectrogram, dieleman) == (
        0.8815, "Dieleman & Schrauwen 2014, Table 1 (spectrogram)"
    )
    assert published_auc(spectrogram, mtat) is None  # Table I is raw audio only
    assert published_auc(network("hybrid.HybridCNN"), dieleman) is None
    clean = {"real_music": True, "tag_set": "top50", "split": "clean"}
    assert published_auc(network("samplecnn.SampleCNN"), clean)[0] == 0.9055
    assert published_auc(network("rese.ReSE2"), clean)[0] == 0.9113
    assert published_auc(config, clean) is None


def test_jobs_are_read_in_numeric_order(tmp_path) -> None:
    from tagger.report import find_jobs

    for num in (10, 2, 1):
        hydra_dir = tmp_path / f"{num}_seed={num}" / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "config.yaml").write_text("task_name: train\n")
        (hydra_dir / "overrides.yaml").write_text(f"- seed={num}\n")
    assert [job.path.name for job in find_jobs([tmp_path])] == [
        "1_seed=1",
        "2_seed=2",
        "10_seed=10",
    ]
