"""Studies (conf/study/) are Hydra multiruns over config groups with their report written by a
Hydra callback; the experiment configs (conf/experiment/) and geometries (conf/geometry/)
compose, and no two of them, nor two jobs of a study, are the same run."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tagger.config import CONFIG_DIR
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli

CONF = REPO_ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml"))
TRAIN = str(REPO_ROOT / "train.py")
#: Table 1's rows, as the papers order them, and its columns.
GEOMETRIES = ["1024-1024", "1024-512", "512-512", "512-256", "256-256"]
INPUTS = {"baseline": "raw audio", "spectrogram": "spectrogram"}
#: What each study sweeps besides the seed: its rows.
STUDY_ROWS = {
    "table1": {"model": ["baseline", "spectrogram"], "geometry": GEOMETRIES},
    "ablations": {"experiment": [
        "nonlinearity_relu", "nonlinearity_log1p_sq", "nonlinearity_log1p_abs",
        "pooling_l2_2", "pooling_l2_4", "pooling_max_2", "pooling_max_4"]},
    "optimizers": {"experiment": ["baseline", "optimizer_adam", "optimizer_adamw"]},
    "models": {"experiment": ["baseline", "model_wide", "model_hybrid", "model_samplecnn",
                              "model_rese2"]},
    "augment": {"experiment": ["baseline", "augment_standard"]},
}  # fmt: skip
#: The configs removed because they were another config's run, and that config.
REMOVED = {
    "model_baseline": "baseline", "optimizer_sgd": "baseline", "augment_none": "baseline",
    "table1_raw_256_256": "baseline", "pooling_none": "nonlinearity_relu",
}  # fmt: skip
#: Keys that do not change the run: labels, the study it belongs to, and the shorthands
#: ``length``/``stride`` (the run reads ``conv``, which they only feed).
NOT_THE_RUN = ("tags", "study", "length", "stride")
#: The shared reference rows: Table 1 cells that are an experiment config's run.
TABLE1_REFERENCES = {
    ("model=baseline", "geometry=256-256"): "baseline",
    ("model=baseline", "geometry=1024-1024"): "nonlinearity_relu",
}


def study_jobs(name: str, *args: str) -> list[tuple[str, ...]]:
    """The jobs ``python train.py study=NAME ARGS`` launches, each as its sweep overrides,
    expanded as Hydra's basic sweeper does (its params, then the command line's)."""
    GlobalHydra.instance().clear()
    single = [arg for arg in args if "," not in arg]  # compose takes no sweep; the sweeper does
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"study={name}", *single], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN" and "study_report" in cfg.hydra.callbacks
    assert cfg.hydra.callbacks.study_report._target_ == "tagger.cli.study.StudyReport"
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    swept = [f"{key}={value}" for key, value in params.items()]  # BasicSweeper._parse_config
    parsed = OverridesParser.create().parse_overrides([*swept, *args])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [tuple(job) for job in batch]


def rows(name: str) -> list[tuple[str, ...]]:
    """A study's rows: the overrides of each job without its seed."""
    swept = STUDY_ROWS[name]
    return [tuple(f"{key}={value}" for key, value in zip(swept, values, strict=True))
            for values in itertools.product(*swept.values())]  # fmt: skip


def run_config(tmp_path: Path, overrides: list[str]) -> dict:
    """The resolved config of a run, without what does not change the run (``NOT_THE_RUN``);
    every config is composed for the same run directory."""
    cfg = compose_config("train", tmp_path / "run", overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # the dashboards' copy of Hydra's group choices names the study too: a label, not the run
    resolved.get("callbacks", {}).get("dashboards", {}).pop("choices", None)
    return {key: value for key, value in resolved.items() if key not in NOT_THE_RUN}


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_config_expands_to_its_rows_times_its_seeds(name: str) -> None:
    expected = rows(name)
    for args, seeds in (((), [1, 2, 3]), (("debug=quick",), [1, 2]),
                        (("seed=1,2,3,4,5",), [1, 2, 3, 4, 5])):  # fmt: skip
        jobs = study_jobs(name, *args)
        assert len(jobs) == len(expected) * len(seeds)
        found = {(tuple(sorted(o for o in job if o not in args and not o.startswith("seed="))),
                  next(o for o in job if o.startswith("seed="))) for job in jobs}  # fmt: skip
        assert found == {(tuple(sorted(row)), f"seed={seed}")
                         for row in expected for seed in seeds}  # fmt: skip


def test_a_study_is_a_multirun_when_chosen_with_a_plus_too() -> None:
    from tagger.cli.train import study_override

    assert study_override(["+study=table1", "debug=quick", "+x=1"]) == [
        "study=table1", "debug=quick", "+x=1",
    ]  # fmt: skip


@pytest.mark.parametrize("name", STUDIES)
def test_every_job_of_every_study_composes_as_its_row_says(name: str, tmp_path: Path) -> None:
    for row in rows(name):
        cfg = compose_config("train", tmp_path / "run", [f"study={name}", *row])
        assert cfg.study.name == name and cfg.study.seeds == "1,2,3"
        values = dict(override.split("=") for override in row)
        if name == "table1":
            length, stride = map(int, values["geometry"].split("-"))
            assert (cfg.conv.length, cfg.conv.stride) == (length, stride)
            spectrogram = cfg.model.net._target_.endswith("SpectrogramCNN")
            assert spectrogram == (values["model"] == "spectrogram")
            assert (cfg.data.sample_rate, cfg.data.n_subclips, cfg.trainer.max_epochs) == (
                12000, 10, 5)  # the coursework setting  # fmt: skip
        else:  # the row is its experiment config's run, plus the study's name
            assert run_config(tmp_path, [f"study={name}", *row]) == run_config(tmp_path, list(row))


def test_a_study_takes_dielemans_setting_and_quick_runs_from_the_command_line(
    tmp_path: Path,
) -> None:
    row = ["geometry=512-256", "model=spectrogram"]
    cfg = compose_config("train", tmp_path, ["study=table1", "experiment/setting=dieleman", *row])
    assert (cfg.data.sample_rate, cfg.data.n_subclips, cfg.data.subclip_len) == (16000, 9, 48000)
    assert cfg.trainer.max_epochs == 20
    cfg = compose_config("train", tmp_path, ["study=models", "debug=quick",
                                             "experiment=model_samplecnn"])  # fmt: skip
    assert (cfg.data.n_subclips, cfg.data.subclip_len, cfg.trainer.max_epochs) == (2, 59049, 1)
    assert (cfg.data.train_clips, cfg.data.val_clips, cfg.data.test_clips) == (100, 50, 50)


def test_no_two_experiment_configs_or_jobs_of_a_study_are_the_same_run(tmp_path: Path) -> None:
    experiments = {name: run_config(tmp_path, [f"experiment={name}"]) for name in EXPERIMENTS}
    for (a, config_a), (b, config_b) in itertools.combinations(experiments.items(), 2):
        assert config_a != config_b, f"experiment={a} and experiment={b} are the same run"
    studies = {}
    for name in STUDIES:
        studies[name] = {row: run_config(tmp_path, [f"study={name}", *row]) for row in rows(name)}
        for (a, config_a), (b, config_b) in itertools.combinations(studies[name].items(), 2):
            assert config_a != config_b, f"study={name}: {a} and {b} are the same run"
    # Across them, only the reference rows Table 1 shares with the other studies coincide.
    shared = {row: experiment for row, cell in studies["table1"].items()
              for experiment, config in experiments.items() if config == cell}  # fmt: skip
    assert shared == TABLE1_REFERENCES


def test_the_removed_configs_are_gone_and_their_runs_have_one_name(tmp_path: Path) -> None:
    assert not set(REMOVED) & set(EXPERIMENTS)
    assert not [name for name in EXPERIMENTS if name.startswith("table1_")]
    assert run_config(tmp_path, ["experiment=baseline"]) == run_config(
        tmp_path, ["+experiment/setting=coursework", "geometry=256-256"])  # fmt: skip


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes_and_builds_its_network(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", tmp_path, [f"experiment={name}"])
    net = instantiate(cfg.model.net, num_tags=5)
    assert sum(p.numel() for p in net.parameters()) > 0
    if name.startswith("nonlinearity_"):
        assert cfg.model.net.nonlinearity == name.removeprefix("nonlinearity_")
    if name.startswith("pooling_"):
        mode, size = name.removeprefix("pooling_").split("_")
        assert (cfg.model.net.feature_pool, cfg.model.net.feature_pool_size) == (mode, int(size))
    if name.startswith(("nonlinearity_", "pooling_")):
        assert (cfg.conv.length, cfg.conv.stride) == (1024, 1024)
    if name.startswith("optimizer_"):
        assert cfg.optimizer._target_.lower().endswith(name.removeprefix("optimizer_"))
    if name.startswith("augment_") or name == "baseline":
        assert (cfg.augment.mixup.p > 0) == (name == "augment_standard")
    if name == "baseline":
        assert (cfg.conv.length, cfg.conv.stride, cfg.optimizer.lr) == (256, 256, 0.1135)
        assert cfg.model.net._target_.endswith("DielemanCNN")


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("model", list(INPUTS))
def test_every_geometry_sets_the_first_layer_of_both_models(
    geometry: str, model: str, tmp_path: Path
) -> None:
    cfg = compose_config("train", tmp_path, [f"geometry={geometry}", f"model={model}"])
    length, stride = map(int, geometry.split("-"))
    assert (cfg.conv.length, cfg.conv.stride) == (length, stride)
    assert (cfg.model.net.conv_length, cfg.model.net.conv_stride) == (length, stride)
    net = instantiate(cfg.model.net, num_tags=5)
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("coursework", (12000, 10, 34950, 5, 0.1135)), ("dieleman", (16000, 9, 48000, 20, 0.1135))],
)
def test_the_two_settings(setting: str, expected: tuple, tmp_path: Path) -> None:
    overrides = ["experiment=baseline", f"experiment/setting={setting}"]
    cfg = compose_config("train", tmp_path, overrides)
    data, trainer = cfg.data, cfg.trainer
    found = (data.sample_rate, data.n_subclips, data.subclip_len, trainer.max_epochs)
    assert (*found, cfg.optimizer.lr) == expected


def test_a_config_keeps_a_study_settings_window_only_where_its_model_needs_its_own(
    tmp_path: Path,
) -> None:
    cfg = compose_config("train", tmp_path, ["experiment=model_samplecnn"])
    assert (cfg.data.sample_rate, cfg.data.subclip_len, cfg.data.n_subclips) == (12000, 59049, 5)


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_script_is_an_alias_of_its_study(name: str, tmp_path: Path) -> None:
    script = REPO_ROOT / "experiments" / f"{name}.sh"
    result = subprocess.run(
        ["bash", str(script), "data=coursework", "seed=1,2,3,4,5"], cwd=tmp_path,
        env={**os.environ, "PYTHON": "echo"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train, *args = result.stdout.split()
    assert Path(train).resolve() == REPO_ROOT / "train.py"
    assert args == [f"study={name}", "data=coursework", "seed=1,2,3,4,5"]


def test_the_study_callback_reports_every_job_of_the_sweep_failed_ones_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``StudyReport.on_multirun_end``, as Hydra calls it with the multirun's config."""
    from tagger.cli.study import StudyReport
    from tests.test_report import _completed, _job

    sweep = tmp_path / "sweep"
    _job(sweep, "0", ["experiment=baseline", "seed=1"], json.dumps(_completed(1, 256, 0.75)))
    _job(sweep, "1", ["experiment=optimizer_adam", "seed=1"],
         json.dumps({"status": "failed", "error": "loss is NaN"}))  # fmt: skip
    StudyReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    markdown = (sweep / "report.md").read_text()
    assert markdown in capsys.readouterr().out
    assert "| experiment=baseline | 1/1 done | 0.8100 | 0.7500 |" in markdown
    assert "| experiment=optimizer_adam | 0/1 done, 1 failed |" in markdown
    assert f"- `{sweep / '1'}` (failed): loss is NaN" in markdown
    assert (sweep / "report.csv").is_file()


def _table1_cells(markdown: str) -> dict[tuple[str, str], str]:
    """The cells of report.md's Table 1: (filter length / stride, input) -> cell."""
    section = markdown.split("## Table 1", 1)[1].split("## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["filter length / stride", "raw audio", "published", "spectrogram",
                      "published"]  # fmt: skip
    cells = {}
    for line in lines[2:]:
        geometry, raw, _, spectrogram, _ = (cell.strip() for cell in line.strip("|").split("|"))
        cells[(geometry, "raw audio")], cells[(geometry, "spectrogram")] = raw, spectrogram
    return cells


@pytest.mark.slow
def test_the_table1_study_runs_every_cell_and_reports_it_as_table1(tmp_path: Path) -> None:
    """``python train.py +study=table1 debug=quick`` (on smaller clips): 10 cells x 2 seeds,
    and the report in the sweep folder when it ends, with no second command."""
    small = ["data.train_clips=40", "data.val_clips=20", "data.test_clips=20",
             "data.subclip_len=16384", *TINY[-3:]]  # fmt: skip
    result = run_cli(TRAIN, "+study=table1", "debug=quick", *small, "hydra.sweep.dir=sweep",
                     cwd=tmp_path, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    metrics = sorted(sweep.glob("*/metrics.json"))
    assert len(metrics) == 20
    markdown = (sweep / "report.md").read_text()
    assert markdown in result.stdout  # printed too
    assert (sweep / "report.csv").is_file() and (sweep / "curves.png").stat().st_size > 0
    cells = _table1_cells(markdown)
    assert list(dict.fromkeys(geometry for geometry, _ in cells)) == [
        g.replace("-", "/") for g in GEOMETRIES]  # fmt: skip
    assert len(cells) == 10
    for cell in cells.values():
        assert re.fullmatch(r"0\.\d{4} ± 0\.\d{4}", cell), cell  # 2 seeds: mean ± std
    with open(sweep / "table1.csv", newline="") as table:
        table1 = list(csv.DictReader(table))
    assert [(row["length"], row["stride"], row["input"]) for row in table1] == [
        (*g.split("-"), name) for g in GEOMETRIES for name in INPUTS.values()]  # fmt: skip
    assert all((row["completed"], row["runs"]) == ("2", "2") for row in table1)
    for row in table1:
        cell = cells[(f"{row['length']}/{row['stride']}", row["input"])]
        assert cell == f"{float(row['test_auc_mean']):.4f} ± {float(row['test_auc_std']):.4f}"


@pytest.mark.slow
def test_the_optimizer_study_reports_one_row_per_config(tmp_path: Path) -> None:
    result = run_cli(TRAIN, "study=optimizers", "debug=quick", "seed=1", *TINY,
                     "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "sweep" / "report.csv", newline="") as table:
        found = list(csv.DictReader(table))
    assert [row["config"] for row in found] == [
        "experiment=baseline",
        "experiment=optimizer_adam",
        "experiment=optimizer_adamw",
    ]
    assert all(row["completed"] == "1" and float(row["test_auc_mean"]) > 0 for row in found)
    assert all(row["published_auc"] == "" for row in found)  # the built-in data is not MTAT
    markdown = (tmp_path / "sweep" / "report.md").read_text()
    assert "## Table 1" not in markdown and "| published |" in markdown
    assert sum("| n/a | n/a |" in line for line in markdown.splitlines()) == 3
    assert not (tmp_path / "sweep" / "table1.csv").exists()


@pytest.mark.slow
def test_the_augment_study_reports_augmentation_off_and_on(tmp_path: Path) -> None:
    result = run_cli(TRAIN, "study=augment", "debug=quick", "seed=1", *TINY, "test=false",
                     "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "sweep" / "report.csv", newline="") as table:
        found = list(csv.DictReader(table))
    assert [row["config"] for row in found] == [
        "experiment=baseline",
        "experiment=augment_standard",
    ]
    assert all(row["completed"] == "1" and float(row["test_auc_mean"]) > 0 for row in found)
    assert found[0]["train_auc_mean"] != found[1]["train_auc_mean"]
