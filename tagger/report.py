"""Turn sweep directories into a results table: one row per config, mean ± std over seeds.

A job is any directory with a ``.hydra/`` folder (Hydra writes it when the job starts),
so jobs that failed or never finished are found too and reported as such. Jobs that
differ only in ``seed`` form one row.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tagger.figures import plot_training_curves
from tagger.published import published_auc
from tagger.run_files import write_text

#: Overrides that do not change what is measured, left out of a row's label.
IGNORED_OVERRIDES = ("seed", "paths.", "ckpt_path", "hydra.", "trainer.enable_progress_bar")


@dataclass
class Job:
    """One training job: where it ran, its overrides, and what it wrote (if anything)."""

    path: Path
    overrides: list[str]
    metrics: dict[str, Any] | None

    @property
    def status(self) -> str:
        return (self.metrics or {}).get("status", "unfinished")

    @property
    def settings(self) -> frozenset[str]:
        """The overrides that define what the job measures (no seed, paths, ...)."""
        return frozenset(
            o for o in self.overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)
        )


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that puts job 2 before job 10 (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_jobs(roots: list[Path]) -> list[Job]:
    """Every training job under ``roots`` (sweep directories, run directories, or parents)."""
    jobs = []
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory (pass sweep or run directories)")
        for hydra_dir in sorted(root.rglob(".hydra"), key=_natural_key):
            job_dir = hydra_dir.parent
            config = OmegaConf.load(hydra_dir / "config.yaml")
            if config.get("task_name") != "train":
                continue
            overrides = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml"))
            metrics_file = job_dir / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
            jobs.append(Job(job_dir, [str(o) for o in overrides], metrics))
    return jobs


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the std needs two values."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _job_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """A completed job's train and held-out ROC-AUC / PR-AUC (test split, else validation)."""
    final = metrics["final"]
    held_out = metrics.get("test") or {"auc": final["val/auc"], "pr_auc": final["val/pr_auc"]}
    return {
        "train_auc": final["train/auc"],
        "train_pr_auc": final["train/pr_auc"],
        "test_auc": held_out["auc"],
        "test_pr_auc": held_out["pr_auc"],
        "epochs": metrics["epochs"],
        "wall_time_s": metrics["wall_time_s"],
    }


@dataclass
class Row:
    """One config of the report, aggregated over its seeds."""

    label: str
    jobs: list[Job] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(job.status == status for job in self.jobs)

    def figures(self) -> dict[str, Any]:
        done = [job.metrics for job in self.jobs if job.status == "completed"]
        per_job = [_job_figures(m) for m in done]
        figures: dict[str, Any] = {
            "config": self.label,
            "completed": len(done),
            "failed": self.count("failed"),
            "unfinished": self.count("unfinished"),
            "held_out_split": "test" if done and all("test" in m for m in done) else "val",
        }
        for key in ("train_auc", "test_auc", "train_pr_auc", "test_pr_auc"):
            figures[f"{key}_mean"], figures[f"{key}_std"] = _mean_std([f[key] for f in per_job])
        figures["epochs_mean"], _ = _mean_std([f["epochs"] for f in per_job])
        figures["wall_time_s_mean"], _ = _mean_std([f["wall_time_s"] for f in per_job])
        published = published_auc(done[0]["config"], done[0]["dataset"]) if done else None
        figures["published_auc"], figures["published_source"] = published or (None, None)
        if published and figures["test_auc_mean"] is not None:
            figures["difference"] = figures["test_auc_mean"] - published[0]
        else:
            figures["difference"] = None
        return figures


def common_settings(jobs: list[Job]) -> frozenset[str]:
    """Overrides shared by every job; they label no row when the jobs differ at all."""
    if len({job.settings for job in jobs}) < 2:
        return frozenset()
    return frozenset.intersection(*(job.settings for job in jobs))


def build_rows(jobs: list[Job]) -> list[Row]:
    """Group jobs by their settings (overrides without the seed), in order of first appearance.

    A row is labelled by the overrides that set it apart from the other rows.
    """
    common = common_settings(jobs)
    rows: dict[str, Row] = {}
    for job in jobs:
        label = " ".join(sorted(job.settings - common)) or "default"
        rows.setdefault(label, Row(label)).jobs.append(job)
    return list(rows.values())


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def render_markdown(rows: list[Row], roots: list[Path]) -> str:
    """The report as Markdown: the table, then every job that did not complete."""
    common = common_settings([job for row in rows for job in row.jobs])
    lines = [
        "# Results",
        "",
        f"From {', '.join(str(r) for r in roots)}. Mean ± sample std over seeds; held-out is "
        "the test split (val where a run had none). Published: the paper's figure for this "
        "setting; n/a where the data is not MTAT or no paper reports the setting.",
        "",
        f"Every job: `{' '.join(sorted(common))}`." if common else "",
        "",
        "| config | runs | train ROC-AUC | held-out ROC-AUC | train PR-AUC | held-out PR-AUC "
        "| epochs | wall time (s) | published | difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        f = row.figures()
        runs = f"{f['completed']}/{len(row.jobs)} done"
        runs += "".join(f", {f[s]} {s}" for s in ("failed", "unfinished") if f[s])
        split = "" if f["held_out_split"] == "test" else " (val)"
        published = f"{f['published_auc']:.4f}" if f["published_auc"] is not None else "n/a"
        difference = f"{f['difference']:+.4f}" if f["difference"] is not None else "n/a"
        epochs = f"{f['epochs_mean']:.1f}" if f["epochs_mean"] is not None else "–"
        wall = f"{f['wall_time_s_mean']:.0f}" if f["wall_time_s_mean"] is not None else "–"
        lines.append(
            f"| {row.label} | {runs} | {_fmt(f['train_auc_mean'], f['train_auc_std'])} "
            f"| {_fmt(f['test_auc_mean'], f['test_auc_std'])}{split} "
            f"| {_fmt(f['train_pr_auc_mean'], f['train_pr_auc_std'])} "
            f"| {_fmt(f['test_pr_auc_mean'], f['test_pr_auc_std'])}{split} "
            f"| {epochs} | {wall} | {published} | {difference} |"
        )
    incomplete = [job for row in rows for job in row.jobs if job.status != "completed"]
    if incomplete:
        lines += ["", "## Jobs that did not complete", ""]
        for job in incomplete:
            reason = (job.metrics or {}).get("error", "no metrics.json: still running or killed")
            lines.append(f"- `{job.path}` ({job.status}): {reason}")
    return "\n".join(lines) + "\n"


def render_csv(rows: list[Row]) -> str:
    """The report as CSV, one row per config, full precision, empty cells for no value."""
    table = [row.figures() for row in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]) if table else ["config"])
    writer.writeheader()
    for figures in table:
        writer.writerow({k: "" if v is None else v for k, v in figures.items()})
    return out.getvalue()


def write_report(roots: list[Path], out_dir: Path) -> tuple[Path, Path, list[Row]]:
    """Write ``report.md``, ``report.csv`` and ``curves.png`` (training curves, one line per
    job) for the jobs under ``roots`` into ``out_dir``."""
    rows = build_rows(find_jobs(roots))
    if not rows:
        raise FileNotFoundError(
            f"no training jobs (directories with .hydra/) under {', '.join(map(str, roots))}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = {
        f"{row.label} seed={(job.metrics or {}).get('config', {}).get('seed')}": log
        for row in rows
        for job in row.jobs
        if (log := job.path / "csv" / "metrics.csv").is_file()
    }
    if logs:
        plot_training_curves(logs, out_dir / "curves.png")
    markdown = write_text(out_dir / "report.md", render_markdown(rows, roots))
    table = write_text(out_dir / "report.csv", render_csv(rows))
    return markdown, table, rows
