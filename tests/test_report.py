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
from tests.conftest import TINY, run_tagger


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[Path, Path]:
    """A 2 optimizers x 2 seeds sweep, and a second sweep with a failed and an unfinished job
    (``train.py -m`` in this process; five tiny trainings, so its tests are slow)."""
    cwd = tmp_path_factory.mktemp("sweeps")
    for args in (["optimizer=sgd,adamw", "seed=1,2"], ["length=1024", "stride=2048"]):
        result = run_tagger("train", "-m", *args, "test=false", *TINY, cwd=cwd)
        assert result.returncode == 0, result.stderr[-2000:]
    first, second = sorted((cwd / "outputs" / "train" / "multiruns").iterdir())
    unfinished = second / "9_killed"
    shutil.copytree(next(first.glob("0_*")) / ".hydra", unfinished / ".hydra")
    return first, second


@pytest.mark.slow
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


@pytest.mark.slow
def test_failed_and_unfinished_jobs_are_shown_and_do_not_stop_it(sweeps, tmp_path) -> None:
    report = write_report(list(sweeps), tmp_path)
    assert set(report.table["config"]) == {
        "optimizer=sgd", "optimizer=adamw", "length=1024 stride=2048",
    }  # fmt: skip
    text = report.markdown.read_text()
    assert "| optimizer=sgd | 2/3 done, 1 unfinished |" in text
    assert "| length=1024 stride=2048 | 0/1 done, 1 failed | – |" in text
    assert "(failed): first-layer stride 2048 must be between 1 and its length 1024" in text
    assert "9_killed` (unfinished): no metrics.json" in text
    assert text.count("| n/a | n/a |") == 3


def _job(sweep: Path, name: str, overrides: list[str], metrics: str | None = None) -> Path:
    """A job directory as Hydra and train.py leave it; ``metrics`` is metrics.json's text."""
    hydra_dir = sweep / name / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text("task_name: train\n")
    (hydra_dir / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (sweep / name / "metrics.json").write_text(metrics)
    return sweep / name


def _completed(seed: int, stride: int, test_auc: float) -> dict:
    """metrics.json of a finished coursework-protocol run of the raw-audio model with SGD."""
    return {
        "status": "completed",
        "config": {
            "seed": seed,
            "conv": {"length": stride, "stride": stride},
            "model": {"net": {"_target_": "tagger.models.dieleman.DielemanCNN"}},
            "optimizer": {"_target_": "torch.optim.SGD"},
        },
        "dataset": {"real_music": True, "tag_set": "merged50", "split": "coursework"},
        "final": {"train/auc": 0.8 + seed / 100, "train/pr_auc": 0.3},
        "test": {"auc": test_auc, "pr_auc": test_auc / 2},
        "epochs": 5,
        "wall_time_s": 100.0 * seed,
    }


def test_rows_on_mtat_hold_the_published_figure_and_the_difference(tmp_path) -> None:
    aucs = {256: [0.7712, 0.7801, 0.7655], 512: [0.7421, 0.7590]}
    for stride, values in aucs.items():
        for seed, auc in enumerate(values, 1):
            metrics = json.dumps(_completed(seed, stride, auc))
            _job(tmp_path, f"{stride}_{seed}", [f"stride={stride}", f"seed={seed}"], metrics)
    report = write_report([tmp_path], tmp_path / "out")
    with report.csv.open() as f:
        rows = {row["config"]: row for row in csv.DictReader(f)}
    published = {256: 0.7873, 512: 0.7748}  # the replication paper's Table I
    text = report.markdown.read_text()
    for stride, values in aucs.items():
        row = rows[f"stride={stride}"]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        assert float(row["test_auc_mean"]) == pytest.approx(mean)
        assert float(row["test_auc_std"]) == pytest.approx(std)
        assert float(row["test_pr_auc_mean"]) == pytest.approx(mean / 2)
        assert float(row["wall_time_s_mean"]) == pytest.approx(statistics.fmean(
            100.0 * seed for seed in range(1, len(values) + 1)))  # fmt: skip
        assert float(row["published_auc"]) == published[stride]
        assert row["published_source"] == "replication paper, Table I"
        assert float(row["difference"]) == pytest.approx(mean - published[stride])
        assert (row["held_out_split"], row["completed"]) == ("test", str(len(values)))
        assert f"| stride={stride} | {len(values)}/{len(values)} done | " in text
        assert f"| {mean:.4f} ± {std:.4f} |" in text
        assert f"| {published[stride]:.4f} | {mean - published[stride]:+.4f} |" in text


def test_interrupted_and_unreadable_jobs_are_listed_and_do_not_stop_it(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    good = json.dumps(_completed(1, 256, 0.75), indent=2)
    interrupted = {"status": "interrupted", "signal": "SIGTERM", "config": {"seed": 2}}
    no_final = {k: v for k, v in _completed(5, 256, 0.7).items() if k != "final"}
    texts = {
        1: good,
        2: json.dumps(interrupted),
        3: good[: len(good) // 2],  # truncated by a full disk or a kill
        4: "[1, 2]",
        5: json.dumps(no_final),
        6: json.dumps({**_completed(6, 256, 0.7), "epochs": "five"}),
    }
    jobs = {seed: _job(sweep, f"{seed}_seed={seed}", [f"seed={seed}"], text)
            for seed, text in texts.items()}  # fmt: skip
    result = run_tagger("report", sweep, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| default | 1/6 done, 1 interrupted, 4 unreadable | 0.8100 |" in result.stdout
    assert f"- `{jobs[2]}` (interrupted): stopped by SIGTERM" in result.stdout
    with pytest.raises(json.JSONDecodeError) as truncated:
        json.loads(texts[3])
    lines = [
        f"- `{jobs[3]}` (unreadable): `{jobs[3] / 'metrics.json'}`: {truncated.value}",
        f"- `{jobs[4]}` (unreadable): `{jobs[4] / 'metrics.json'}`: holds a list, not a JSON",
        f"- `{jobs[5]}` (unreadable): `{jobs[5] / 'metrics.json'}` has no 'final'",
        f"- `{jobs[6]}` (unreadable): `{jobs[6] / 'metrics.json'}`: epochs is 'five', not a",
    ]
    for line in lines:
        assert line in result.stdout
    with (sweep / "report.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert [row[s] for s in ("completed", "failed", "unfinished", "interrupted", "unreadable")] == [
        "1", "0", "0", "1", "4",
    ]  # fmt: skip
    assert float(row["test_auc_mean"]) == 0.75 and row["test_auc_std"] == ""


def test_report_of_no_jobs_is_a_clear_error(tmp_path) -> None:
    result = run_tagger("report", tmp_path, cwd=tmp_path)
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


def _jamendo_run(seed: int, model: str, genre: float, mood: float) -> dict:
    """metrics.json of a finished run on an MTG-Jamendo store: held-out macro figures per
    tag category (``per_category``), as train.py writes them."""
    per_category = {"genre": {"auc": genre, "pr_auc": genre / 4},
                    "mood/theme": {"auc": mood, "pr_auc": None}}  # null: no tag scored
    return {
        "status": "completed",
        "config": {"seed": seed, "model": {"net": {"_target_": model}}},
        "dataset": {"real_music": None, "tag_set": "MTG-Jamendo autotagging_top50tags",
                    "split": "split-0"},
        "final": {"train/auc": 0.9, "train/pr_auc": 0.5},
        "test": {"auc": (genre + mood) / 2, "pr_auc": 0.2, "per_category": per_category},
        "epochs": 2,
        "wall_time_s": 10.0,
    }  # fmt: skip


def test_runs_with_tag_categories_get_a_column_per_category(tmp_path) -> None:
    runs = {("a", 1): (0.80, 0.70), ("a", 2): (0.84, 0.74), ("b", 1): (0.60, 0.66)}
    for (model, seed), (genre, mood) in runs.items():
        metrics = json.dumps(_jamendo_run(seed, f"m.{model}", genre, mood))
        _job(tmp_path, f"{model}_{seed}", [f"model={model}", f"seed={seed}"], metrics)
    report = write_report([tmp_path], tmp_path / "out")
    with report.csv.open() as f:
        rows = {row["config"]: row for row in csv.DictReader(f)}
    a = rows["model=a"]
    assert float(a["test_auc:genre_mean"]) == pytest.approx(0.82)
    assert float(a["test_auc:genre_std"]) == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert float(a["test_pr_auc:genre_mean"]) == pytest.approx(0.82 / 4)
    assert float(a["test_auc:mood/theme_mean"]) == pytest.approx(0.72)
    assert a["test_pr_auc:mood/theme_mean"] == ""  # null in every run
    assert float(rows["model=b"]["test_auc:mood/theme_mean"]) == pytest.approx(0.66)
    text = report.markdown.read_text()
    header = ("| config | runs | train ROC-AUC | held-out ROC-AUC | train PR-AUC | held-out "
              "PR-AUC | genre ROC-AUC | genre PR-AUC | mood/theme ROC-AUC | mood/theme PR-AUC |")
    assert header in text
    assert (f"| {0.82:.4f} ± {statistics.stdev([0.80, 0.84]):.4f} | "
            f"{0.205:.4f} ± {statistics.stdev([0.2, 0.21]):.4f} | "
            f"{0.72:.4f} ± {statistics.stdev([0.70, 0.74]):.4f} | – |") in text
    assert "| 0.6000 | 0.1500 | 0.6600 | – | 2.0 | 10 | n/a | n/a |" in text


@pytest.mark.slow
def test_runs_without_tag_categories_get_no_category_column(sweeps, tmp_path) -> None:
    report = write_report([sweeps[0]], tmp_path)
    assert not [column for column in report.table.columns if ":" in column]
    assert "genre" not in report.markdown.read_text()


def _dieleman_run(seed: int, length: int, stride: int, model: str, test_auc: float) -> str:
    """metrics.json of a finished Table 1 cell in Dieleman's protocol (top50, his split)."""
    target = {"baseline": "tagger.models.dieleman.DielemanCNN",
              "spectrogram": "tagger.models.spectrogram.SpectrogramCNN"}[model]  # fmt: skip
    metrics = _completed(seed, stride, test_auc)
    metrics["config"] |= {"conv": {"length": length, "stride": stride},
                          "model": {"net": {"_target_": target}}}  # fmt: skip
    metrics["dataset"] = {"real_music": True, "tag_set": "top50", "split": "dieleman"}
    return json.dumps(metrics)


def test_a_sweep_of_table1_cells_is_laid_out_as_table1(tmp_path) -> None:
    """Rows by filter length / stride as the paper orders them, raw audio and spectrogram
    columns, mean ± std over seeds with Dieleman's figure beside each; a cell whose run
    failed says so, a cell not run is '–'; report.csv keeps one row per config."""
    aucs = {("1024-1024", "baseline"): [0.80, 0.82], ("1024-1024", "spectrogram"): [0.85, 0.86],
            ("256-256", "baseline"): [0.83, 0.84], ("512-256", "spectrogram"): [0.87]}
    for (geometry, model), values in aucs.items():
        length, stride = map(int, geometry.split("-"))
        for seed, auc in enumerate(values, 1):
            overrides = ["study=table1", f"geometry={geometry}", f"model={model}", f"seed={seed}"]
            _job(tmp_path / "sweep", f"{geometry}_{model}_{seed}", overrides,
                 _dieleman_run(seed, length, stride, model, auc))  # fmt: skip
    failed = ["study=table1", "geometry=512-256", "model=spectrogram", "seed=2"]
    _job(tmp_path / "sweep", "failed", failed, json.dumps({"status": "failed", "error": "boom"}))
    report = write_report([tmp_path / "sweep"], tmp_path / "out")
    text = report.markdown.read_text()
    table = text.split("## Table 1", 1)[1].split("## Every config", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    mean_std = {key: f"{statistics.fmean(v):.4f} ± {statistics.stdev(v):.4f}"
                for key, v in aucs.items() if len(v) > 1}  # fmt: skip
    assert lines == [
        "| filter length / stride | raw audio | published | spectrogram | published |",
        "|---|---|---|---|---|",
        f"| 1024/1024 | {mean_std['1024-1024', 'baseline']} | 0.8366 "
        f"| {mean_std['1024-1024', 'spectrogram']} | 0.8690 |",
        "| 512/256 | – | – | 0.8700 (1/2 done) | 0.8793 |",
        f"| 256/256 | {mean_std['256-256', 'baseline']} | 0.8487 | – | – |",
    ]
    assert "| geometry=512-256 model=spectrogram | 1/2 done, 1 failed |" in text
    assert set(report.table["config"]) == {f"geometry={g} model={m}" for g, m in aucs}
    with report.table1_csv.open() as f:
        cells = list(csv.DictReader(f))
    assert [(c["length"], c["stride"], c["input"]) for c in cells] == [
        ("1024", "1024", "raw audio"), ("1024", "1024", "spectrogram"),
        ("512", "256", "spectrogram"), ("256", "256", "raw audio"),
    ]  # fmt: skip
    assert float(cells[0]["published_auc"]) == 0.8366
    assert cells[0]["published_source"] == "Dieleman & Schrauwen 2014, Table 1 (raw audio)"


def test_former_table1_sweeps_are_laid_out_as_table1_and_other_sweeps_are_not(tmp_path) -> None:
    """A sweep of the former experiment=table1_* configs gets Table 1 too; a sweep whose
    rows are not one Table 1 cell each (here two optimizers per geometry) keeps one row
    per config, with no table1.csv."""
    for name in ("table1_raw_512_512", "table1_spectrogram_512_512"):
        model = "baseline" if "_raw_" in name else "spectrogram"
        _job(tmp_path / "old", name, [f"experiment={name}", "seed=1"],
             _dieleman_run(1, 512, 512, model, 0.85))  # fmt: skip
    old = write_report([tmp_path / "old"], tmp_path / "old")
    assert "| 512/512 | 0.8500 | 0.8386 | 0.8500 | 0.8793 |" in old.markdown.read_text()
    for optimizer in ("sgd", "adam"):
        _job(tmp_path / "other", optimizer, ["geometry=512-512", f"optimizer={optimizer}"],
             _dieleman_run(1, 512, 512, "baseline", 0.85))  # fmt: skip
    other = write_report([tmp_path / "other"], tmp_path / "other")
    assert "## Table 1" not in other.markdown.read_text()
    assert other.table1_csv is None and not (tmp_path / "other" / "table1.csv").exists()
