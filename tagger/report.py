"""Turn sweep directories into a results table: one row per config, mean ± std over seeds.

A job is any directory with a ``.hydra/`` folder (Hydra writes it when the job starts),
so jobs that failed, were interrupted or never finished are found too and reported as
such; so is a job whose ``metrics.json`` cannot be read. Jobs that differ only in
``seed`` form one row. The table is one pandas ``groupby().agg()`` over the jobs.
A job's ``.hydra/`` files are read as plain data (``plain_yaml``): nothing in them is
resolved or instantiated. Runs whose tags have categories (MTG-Jamendo's ``genre---rock``)
add held-out macro ROC-AUC and PR-AUC per category (``metrics.json``'s ``per_category``)
as columns ``test_auc:<category>`` and ``test_pr_auc:<category>``.

A sweep of Table 1's cells (``study=table1``: ``geometry=L-S`` x ``model=baseline,spectrogram``,
or the former ``experiment=table1_{raw,spectrogram}_L_S`` configs) is also laid out as the
papers' Table 1: a row per first-layer filter length / stride, a column per input (raw audio,
spectrogram), each cell the held-out ROC-AUC over seeds with the published figure beside it
(``table1_cells``, ``table1_frame``); ``table1.csv`` holds it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from tagger.errors import ConfigError
from tagger.figures import plot_training_curves
from tagger.published import published_auc
from tagger.run_files import write_text

#: Overrides that do not change what is measured, left out of a row's label.
IGNORED_OVERRIDES = ("seed", "paths.", "ckpt_path", "hydra.", "trainer.enable_progress_bar")
#: What became of a job, in the order the report counts them.
STATUSES = ("completed", "failed", "unfinished", "interrupted", "unreadable")
#: A completed job's figures that are averaged over seeds (mean ± sample std); the F1s are
#: the test split's at the run's decision thresholds (``metrics.json``'s ``test.decisions``;
#: NaN for a run without a test split).
FIGURES = ("train_auc", "test_auc", "train_pr_auc", "test_pr_auc", "test_micro_f1",
           "test_macro_f1")  # fmt: skip
#: Table 1's columns: the input each ``model=`` choice of its cells reads, as the papers name it.
TABLE1_INPUTS = {"baseline": "raw audio", "spectrogram": "spectrogram"}
#: The former Table 1 configs, ``experiment=table1_raw_1024_512``: input, length, stride.
TABLE1_EXPERIMENT = re.compile(r"table1_(raw|spectrogram)_(\d+)_(\d+)")


@dataclass
class Job:
    """One training job: where it ran, its overrides, what became of it and its figures.

    ``status`` is one of ``STATUSES``; ``reason`` says why a job did not complete;
    ``figures`` holds a completed job's ``FIGURES``, ``epochs`` and ``wall_time_s``.
    """

    path: Path
    overrides: list[str]
    status: str
    reason: str = ""
    metrics: dict[str, Any] | None = None
    figures: dict[str, float] | None = None

    @property
    def settings(self) -> frozenset[str]:
        """The overrides that define what the job measures (no seed, paths, ...)."""
        return frozenset(
            o for o in self.overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)
        )


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that puts job 2 before job 10 (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def category_figures(figures: list[str]) -> list[str]:
    """The per-category figures among ``figures`` (``test_auc:<category>``, ...)."""
    return [figure for figure in figures if ":" in figure]


def _job_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """A completed job's train and held-out ROC-AUC / PR-AUC (test split, else validation),
    overall and, where the run has them, per tag category."""
    final = metrics["final"]
    held_out = metrics.get("test") or {"auc": final["val/auc"], "pr_auc": final["val/pr_auc"],
                                       **(metrics.get("val") or {})}  # fmt: skip
    per_category = {
        f"test_{figure}:{category}": values[figure]
        for category, values in (held_out.get("per_category") or {}).items()
        for figure in ("auc", "pr_auc")
    }
    decisions = (metrics.get("test") or {}).get("decisions") or {}
    figures = {
        "train_auc": final["train/auc"],
        "train_pr_auc": final["train/pr_auc"],
        "test_auc": held_out["auc"],
        "test_pr_auc": held_out["pr_auc"],
        "test_micro_f1": (decisions.get("micro") or {}).get("f1", math.nan),
        "test_macro_f1": (decisions.get("macro") or {}).get("f1", math.nan),
        "epochs": metrics["epochs"],
        "wall_time_s": metrics["wall_time_s"],
        **per_category,
    }
    for key, value in figures.items():  # null: a NaN the run wrote as null
        if value is not None and not isinstance(value, (int, float)):
            raise TypeError(f"{key} is {value!r}, not a number")
    return figures


def read_job(job_dir: Path, overrides: list[str]) -> Job:
    """The job in ``job_dir``, from its ``metrics.json``: unfinished if there is none,
    unreadable (with the reason) if it is not a JSON object a run writes."""
    metrics_file = job_dir / "metrics.json"
    if not metrics_file.is_file():
        return Job(job_dir, overrides, "unfinished", "no metrics.json: still running or killed")
    try:
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict):
            raise TypeError(f"holds a {type(metrics).__name__}, not a JSON object")
        status = metrics["status"]
        figures = _job_figures(metrics) if status == "completed" else None
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        return Job(job_dir, overrides, "unreadable", f"`{metrics_file}`: {error}")
    except KeyError as error:
        return Job(job_dir, overrides, "unreadable", f"`{metrics_file}` has no {error}")
    if status == "interrupted":
        reason = f"stopped by {metrics.get('signal') or 'a signal'}"
    elif status not in STATUSES:
        status, reason = "unreadable", f"`{metrics_file}`: unknown status {status!r}"
    else:
        reason = metrics.get("error", "")
    return Job(job_dir, overrides, status, reason, metrics, figures)


def plain_yaml(path: Path) -> Any:
    """A YAML file of a job's ``.hydra/`` as plain data: lists, dicts, strings, numbers.

    ``OmegaConf.to_container(resolve=False)``: nothing in it is resolved (``${oc.env:...}``
    stays text) or instantiated (``_target_`` is a string like any other). Raises
    ``ValueError`` naming the file when it cannot be read or parsed.
    """
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # missing, not UTF-8, not YAML, not a mapping or list
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"`{path}` cannot be read: {reason}") from None


def _job_settings(hydra_dir: Path) -> tuple[str | None, list[str]]:
    """A job's ``task_name`` and overrides, from its ``.hydra/`` files as plain data."""
    config = plain_yaml(hydra_dir / "config.yaml")
    overrides = plain_yaml(hydra_dir / "overrides.yaml")
    if not isinstance(config, dict) or not isinstance(overrides, list):
        raise ValueError(f"`{hydra_dir}` does not hold a Hydra job's config.yaml and "
                         "overrides.yaml")  # fmt: skip
    return config.get("task_name"), [str(o) for o in overrides]


def find_jobs(roots: list[Path]) -> list[Job]:
    """Every training job under ``roots`` (sweep directories, run directories, or parents);
    a job whose ``.hydra/`` files cannot be read is listed as unreadable.

    Raises ``ConfigError`` when a root is not a directory."""
    jobs = []
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"{root} is not a directory (pass sweep or run directories)")
        for hydra_dir in sorted(root.rglob(".hydra"), key=_natural_key):
            try:
                task_name, overrides = _job_settings(hydra_dir)
            except ValueError as error:
                jobs.append(Job(hydra_dir.parent, [], "unreadable", str(error)))
                continue
            if task_name == "train":
                jobs.append(read_job(hydra_dir.parent, overrides))
    return jobs


def common_settings(jobs: list[Job]) -> frozenset[str]:
    """Overrides shared by every job; they label no row when the jobs differ at all."""
    if len({job.settings for job in jobs}) < 2:
        return frozenset()
    return frozenset.intersection(*(job.settings for job in jobs))


def labelled_jobs(jobs: list[Job]) -> list[tuple[str, Job]]:
    """Each job with its row label (the overrides that set it apart from the other rows),
    grouped by row in order of first appearance."""
    common = common_settings(jobs)
    labels = [" ".join(sorted(job.settings - common)) or "default" for job in jobs]
    first = {label: i for i, label in reversed(list(enumerate(labels)))}
    return sorted(zip(labels, jobs, strict=True), key=lambda pair: first[pair[0]])


def table1_cell(settings: frozenset[str]) -> tuple[int, int, str] | None:
    """The Table 1 cell (filter length, stride, input) a job's overrides put it in, or None:
    ``geometry=L-S`` with ``model=baseline`` (the default) or ``model=spectrogram``, or a
    former ``experiment=table1_{raw,spectrogram}_L_S`` config."""
    values = dict(o.lstrip("+~").partition("=")[::2] for o in settings)
    old = TABLE1_EXPERIMENT.fullmatch(values.get("experiment", ""))
    if old and not {"geometry", "model"} & values.keys():
        kind, length, stride = old.groups()
        return int(length), int(stride), "raw audio" if kind == "raw" else "spectrogram"
    geometry = re.fullmatch(r"(\d+)-(\d+)", values.get("geometry", ""))
    model = values.get("model", "baseline")
    if geometry is None or model not in TABLE1_INPUTS or "experiment" in values:
        return None
    return int(geometry[1]), int(geometry[2]), TABLE1_INPUTS[model]


def table1_cells(jobs: list[Job]) -> dict[str, tuple[int, int, str]] | None:
    """Each row label's Table 1 cell when the jobs are Table 1's cells (every job in one,
    one row per cell), else None: the sweep is reported one row per config only."""
    cells: dict[str, tuple[int, int, str]] = {}
    for label, job in labelled_jobs(jobs):
        cell = table1_cell(job.settings)
        if cell is None or cells.setdefault(label, cell) != cell:
            return None
    return cells if len(set(cells.values())) == len(cells) else None


def table1_frame(table: pd.DataFrame, cells: dict[str, tuple[int, int, str]]) -> pd.DataFrame:
    """``table`` (``summarise``) as Table 1's cells: one row per (length, stride, input),
    largest geometry first and raw audio before spectrogram, with the held-out ROC-AUC's
    mean and std, the runs done and the published figure. Columns as in ``table1.csv``."""
    frame = table.assign(
        length=[cells[c][0] for c in table["config"]],
        stride=[cells[c][1] for c in table["config"]],
        input=[cells[c][2] for c in table["config"]],
        runs=table[list(STATUSES)].sum(axis=1),
    )
    order = list(TABLE1_INPUTS.values())
    frame = frame.sort_values(
        ["length", "stride", "input"], ascending=[False, False, True],
        key=lambda column: column.map(order.index) if column.name == "input" else column,
    )  # fmt: skip
    columns = ["length", "stride", "input", "config", "completed", "runs", "held_out_split",
               "test_auc_mean", "test_auc_std", "published_auc", "published_source"]  # fmt: skip
    return frame[columns].reset_index(drop=True)


def render_table1(frame: pd.DataFrame) -> list[str]:
    """Table 1 in Markdown: a row per filter length / stride, for each input its held-out
    ROC-AUC (mean ± sample std over seeds) and the published figure beside it."""
    inputs = list(TABLE1_INPUTS.values())
    header = ["filter length / stride"]
    for name in inputs:
        header += [name, "published"]
    lines = [
        "## Table 1",
        "",
        "Held-out ROC-AUC, mean ± sample std over seeds, by the first layer's filter length "
        "/ stride (frame length / hop for the spectrogram); published: the paper's figure for "
        "the cell where the run follows its protocol (n/a elsewhere).",
        "",
        _markdown_row(header),
        "|" + "---|" * len(header),
    ]
    for (length, stride), rows in frame.groupby(["length", "stride"], sort=False):
        cells = [f"{length}/{stride}"]
        for name in inputs:
            found = rows[rows["input"] == name]
            if found.empty:
                cells += ["–", "–"]
                continue
            row = found.iloc[0]
            value = _mean_std(row.test_auc_mean, row.test_auc_std)
            if row.held_out_split != "test" and row.completed:
                value += " (val)"
            if row.completed != row.runs:
                value += f" ({row.completed}/{row.runs} done)"
            published = "n/a" if pd.isna(row.published_auc) else f"{row.published_auc:.4f}"
            cells += [value, published]
        lines.append(_markdown_row(cells))
    return [*lines, "", "## Every config", ""]


def job_frame(jobs: list[Job]) -> pd.DataFrame:
    """One row per job: its config label, status, held-out split, figures and the
    published figure for its setting (completed jobs only; NaN elsewhere)."""
    records = []
    for label, job in labelled_jobs(jobs):
        record: dict[str, Any] = {"config": label, "status": job.status}
        if job.figures is not None and job.metrics is not None:
            published = published_auc(job.metrics.get("config", {}), job.metrics.get("dataset", {}))
            record |= job.figures
            record["has_test"] = bool(job.metrics.get("test"))
            record["published_auc"], record["published_source"] = published or (None, None)
        records.append(record)
    by_category = category_figures(list(dict.fromkeys(k for r in records for k in r)))
    columns = ["config", "status", "has_test", *FIGURES, "epochs", "wall_time_s",
               "published_auc", "published_source", *by_category]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


def summarise(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per config (in order of first appearance): job counts per status, mean and
    sample std (n - 1) of every figure over the completed jobs (per tag category too, where
    the jobs have categories), the published figure and the difference of the held-out
    ROC-AUC from it. Columns as in ``report.csv``."""
    order = jobs["config"].unique()
    counts = pd.crosstab(jobs["config"], jobs["status"]).reindex(
        index=order, columns=list(STATUSES), fill_value=0
    )
    done = jobs[jobs["status"] == "completed"]
    figures = [*FIGURES, *category_figures(list(jobs.columns))]
    stats = done.groupby("config", sort=False).agg(
        held_out_split=("has_test", lambda has_test: "test" if has_test.all() else "val"),
        **{f"{key}_{stat}": (key, stat) for key in figures for stat in ("mean", "std")},
        epochs_mean=("epochs", "mean"),
        wall_time_s_mean=("wall_time_s", "mean"),
        published_auc=("published_auc", "first"),
        published_source=("published_source", "first"),
    )
    table = counts.join(stats)
    table["held_out_split"] = table["held_out_split"].fillna("val")
    table["difference"] = table["test_auc_mean"] - table["published_auc"]
    return table.rename_axis("config").reset_index()


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def _markdown_row(cells: list[str]) -> str:
    """One Markdown table line. Written here, not by ``DataFrame.to_markdown``: tabulate
    pads every cell to its column's width, which would change every line of report.md."""
    return "| " + " | ".join(cells) + " |"


def render_markdown(
    table: pd.DataFrame, jobs: list[Job], roots: list[Path], table1: pd.DataFrame | None = None
) -> str:
    """The report as Markdown: Table 1's layout where ``table1`` is given (``table1_frame``),
    the table, then every job that did not complete."""
    common = common_settings(jobs)
    by_category = [c.removesuffix("_mean") for c in table.columns if ":" in c and
                   c.endswith("_mean")]  # fmt: skip
    category_header = [
        f"{figure.partition(':')[2]} {'PR' if figure.startswith('test_pr') else 'ROC'}-AUC"
        for figure in by_category
    ]
    header = ["config", "runs", "train ROC-AUC", "held-out ROC-AUC", "train PR-AUC",
              "held-out PR-AUC", *category_header, "epochs", "wall time (s)", "published",
              "difference", "test micro F1", "test macro F1"]  # fmt: skip
    lines = [
        "# Results",
        "",
        f"From {', '.join(str(r) for r in roots)}. Mean ± sample std over seeds; held-out is "
        "the test split (val where a run had none). Published: the paper's figure for this "
        "setting; n/a where the data is not MTAT or no paper reports the setting. Test "
        "micro and macro F1: at each run's decision thresholds, fitted on validation (– "
        "where a run has no test split)."
        + (" Per tag category (e.g. genre ROC-AUC): the held-out macro figure over the "
           "category's tags." if by_category else ""),
        "",
        f"Every job: `{' '.join(sorted(common))}`." if common else "",
        "",
        *(render_table1(table1) if table1 is not None else []),
        _markdown_row(header),
        "|" + "---|" * len(header),
    ]
    for _, row in table.iterrows():  # a Series per row: category columns hold a ':'
        total = sum(getattr(row, status) for status in STATUSES)
        runs = f"{row.completed}/{total} done" + "".join(
            f", {getattr(row, s)} {s}" for s in STATUSES[1:] if getattr(row, s)
        )
        split = "" if row.held_out_split == "test" else " (val)"
        lines.append(
            _markdown_row(
                [
                    row.config,
                    runs,
                    _mean_std(row.train_auc_mean, row.train_auc_std),
                    _mean_std(row.test_auc_mean, row.test_auc_std) + split,
                    _mean_std(row.train_pr_auc_mean, row.train_pr_auc_std),
                    _mean_std(row.test_pr_auc_mean, row.test_pr_auc_std) + split,
                    *(_mean_std(row[f"{f}_mean"], row[f"{f}_std"]) + split for f in by_category),
                    "–" if pd.isna(row.epochs_mean) else f"{row.epochs_mean:.1f}",
                    "–" if pd.isna(row.wall_time_s_mean) else f"{row.wall_time_s_mean:.0f}",
                    "n/a" if pd.isna(row.published_auc) else f"{row.published_auc:.4f}",
                    "n/a" if pd.isna(row.difference) else f"{row.difference:+.4f}",
                    _mean_std(row.test_micro_f1_mean, row.test_micro_f1_std),
                    _mean_std(row.test_macro_f1_mean, row.test_macro_f1_std),
                ]
            )
        )
    incomplete = [job for _, job in labelled_jobs(jobs) if job.status != "completed"]
    if incomplete:
        lines += ["", "## Jobs that did not complete", ""]
        lines += [f"- `{job.path}` ({job.status}): {job.reason}" for job in incomplete]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote and the table it holds (one row per config)."""

    markdown: Path
    csv: Path
    table: pd.DataFrame
    jobs: list[Job]
    #: ``table1.csv`` and Table 1's cells (``table1_frame``), for a sweep of Table 1's cells
    table1_csv: Path | None = None
    table1: pd.DataFrame | None = None


def write_report(roots: list[Path], out_dir: Path) -> Report:
    """Write ``report.md``, ``report.csv`` and ``curves.png`` (training curves, one line per
    job) for the jobs under ``roots`` into ``out_dir``, each through tagger's one writer;
    for a sweep of Table 1's cells (``table1_cells``) report.md opens with Table 1 and
    ``table1.csv`` holds its cells.

    Raises ``ConfigError`` when there is no job to report, ``OutputError`` naming a file
    that cannot be written."""
    jobs = find_jobs(roots)
    if not jobs:
        raise ConfigError(
            f"no training jobs (directories with .hydra/) under {', '.join(map(str, roots))}"
        )
    table = summarise(job_frame(jobs))
    cells = table1_cells(jobs)
    table1 = table1_frame(table, cells) if cells is not None else None
    logs = {
        f"{label} seed={(job.metrics or {}).get('config', {}).get('seed')}": log
        for label, job in labelled_jobs(jobs)
        if (log := job.path / "csv" / "metrics.csv").is_file()
    }
    if logs:
        plot_training_curves(logs, out_dir / "curves.png")
    markdown = write_text(out_dir / "report.md", render_markdown(table, jobs, roots, table1))
    csv = write_text(out_dir / "report.csv", table.to_csv(index=False))
    table1_csv = None
    if table1 is not None:
        table1_csv = write_text(out_dir / "table1.csv", table1.to_csv(index=False))
    return Report(markdown, csv, table, jobs, table1_csv, table1)
